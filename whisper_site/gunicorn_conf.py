"""gunicorn's settings for the API: one file for ``manage.py serve`` and the image's web role.

Both start ``gunicorn --config python:whisper_site.gunicorn_conf ...``; what they
pass on the command line (bind address, workers, threads, timeout) wins over the
defaults here.
"""

from __future__ import annotations

from typing import Any

from gunicorn import util

# gthread, with the request head (and a small body) received in its event loop
# before a thread takes the request, kept-alive connections idle there too, and
# bodies an answer left unread drained or the connection closed: slow and idle
# clients never hold its threads (see the module, and docs/production.md).
worker_class = "whisper_site.gunicorn_worker.BufferingThreadWorker"
workers = 2
threads = 4
# The worker heartbeats from its event loop, beside the threads, so a long
# upload is not mistaken for a hung worker.
timeout = 120
accesslog = "-"
# gunicorn refuses a longer request line or header field itself, before Django
# sees the request. 8190 bytes is the most it allows for the line (its default
# is 4094); anything longer is refused in one line of plain text (below).
limit_request_line = 8190
limit_request_field_size = 8190


def refused_request_write(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it refuses, as one line of text/plain instead of its HTML page.

    gunicorn keeps its status (400 for a malformed or over-long request line,
    431 for over-long headers); its message becomes the body.
    """
    if status_int == 431:
        # gunicorn's own words here are "Error parsing headers: 'limit request headers fields size'".
        mesg = "Request header fields too large"
    line = " ".join((mesg or reason).split())
    line = "".join(char if char.isprintable() else "?" for char in line)
    body = line.encode("ascii", "replace")
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def post_fork(server: Any, worker: Any) -> None:
    # gunicorn has no setting for the body of the errors it answers itself
    # (workers/base.py calls util.write_error, which writes an HTML page):
    # each worker replaces that one function after it is forked.
    util.write_error = refused_request_write
