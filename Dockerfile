# The Whisper API image: one image for the web server, the workers and beat;
# the first argument of the entrypoint picks the role (deploy/entrypoint.sh).
#
#   docker build -t whisper-api .
#   docker compose up -d                     (see docs/production.md)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data \
    STATIC_ROOT=/app/staticfiles \
    PORT=8000

WORKDIR /app

# Every Python dependency ships its native parts in wheels: PyAV and
# imageio-ffmpeg bring ffmpeg, psycopg[binary] brings libpq, ctranslate2 its
# inference runtime. EXTRA_PIP_PACKAGES adds more, e.g. the CUDA libraries of a
# GPU worker image (docs/production.md).
ARG EXTRA_PIP_PACKAGES=""
COPY requirements.txt .
RUN pip install -r requirements.txt ${EXTRA_PIP_PACKAGES}

COPY . .

# Static files are part of the image: collected into STATIC_ROOT, which
# WhiteNoise serves because it is set (without it, as under `make run`,
# WhiteNoise finds them in the apps). Media, models and caches live in /data, a
# volume.
RUN python manage.py collectstatic --noinput --verbosity 0 \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home whisper \
    && mkdir -p /data \
    && chown -R whisper:whisper /data \
    && chmod +x deploy/entrypoint.sh

USER whisper
VOLUME ["/data"]
EXPOSE 8000

ENTRYPOINT ["/app/deploy/entrypoint.sh"]
CMD ["web"]
