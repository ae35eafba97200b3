"""Upload throughput and memory of ``POST /file`` against a plain ``cp``.

Run from the repository root::

    .venv/bin/python bench/upload.py [--size-gib 1] [--rounds 3] [--keep]

It generates a WAV of at least ``--size-gib`` GiB (48 kHz stereo 16-bit
noise: real audio the probe accepts), times ``cp`` of it, starts gunicorn
(one worker, as ``manage.py serve`` runs it) on a temporary ``DATA_DIR`` with
SQLite and a filesystem broker that no worker consumes (so conversion stays
out of the timing), registers a user and uploads the file with
``curl -F file=@...`` (curl streams it from disk), and again with a minimal
client that sends the file with sendfile(2) (on one machine curl's copying
competes with the server for the CPUs). Each of ``--rounds`` rounds times a cp
and both uploads (deleting each upload again), each after a ``sync``;
it prints the medians' MiB/s, their ratio, and the gunicorn worker's peak RSS growth
over the upload. Figures only, no assertions. Everything it created is
removed at the end (``--keep`` keeps the temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
SAMPLE_RATE = 48_000
CHANNELS = 2
SAMPLE_BYTES = 2


def wav_header(data_bytes: int) -> bytes:
    byte_rate = SAMPLE_RATE * CHANNELS * SAMPLE_BYTES
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, CHANNELS, SAMPLE_RATE, byte_rate, CHANNELS * SAMPLE_BYTES, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def write_wav(path: Path, total_bytes: int) -> None:
    """Noise PCM: random bytes are valid 16-bit samples, and never the same file twice."""
    frame = CHANNELS * SAMPLE_BYTES
    data_bytes = (total_bytes - 44 + frame - 1) // frame * frame
    block = os.urandom(8 * MIB)
    with open(path, "wb") as out:
        out.write(wav_header(data_bytes))
        written = 0
        while written < data_bytes:
            # A fresh head per block keeps every block distinct at little cost.
            piece = (os.urandom(64) + block[64:])[: data_bytes - written]
            out.write(piece)
            written += len(piece)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


def request_json(url: str, body: dict[str, object], headers: dict[str, str] | None = None) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def curl_upload(url: str, path: Path, session_id: str) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    result = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-H", f"Authorization: Basic {session_id}",
         "-H", "Expect:", "-F", f"file=@{path}", url],
        capture_output=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"upload failed: {result.stdout.decode()[:300]} {result.stderr.decode()[:300]}")
    return elapsed, json.loads(result.stdout)


def sendfile_upload(port: int, path: Path, session_id: str) -> tuple[float, dict[str, object]]:
    """The same multipart POST, the file sent with sendfile(2): a client that costs almost no CPU.

    On one machine curl's own copying competes with the server for the CPUs;
    a client elsewhere would not. This shows what the server alone sustains.
    """
    boundary = "----bench-sendfile-0123456789"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + path.stat().st_size + len(tail)
    request = (
        f"POST /api/v1/file HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {session_id}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock, open(path, "rb") as source:
        sock.sendall(request + head)
        sock.sendfile(source)
        sock.sendall(tail)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    elapsed = time.perf_counter() - started
    headers, _, body = response.partition(b"\r\n\r\n")
    if not headers.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"upload failed: {response[:300]!r}")
    if b"transfer-encoding: chunked" in headers.lower():
        decoded = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded += rest[:size]
            body = rest[size + 2 :]
        body = decoded
    return elapsed, json.loads(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="cp/upload pairs; medians are reported")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed")

    work = Path(tempfile.mkdtemp(prefix="whisper-bench-", dir=ROOT / "var" if (ROOT / "var").is_dir() else None))
    server: subprocess.Popen[bytes] | None = None
    try:
        size = int(args.size_gib * 1024 * MIB)
        source = work / "bench.wav"
        started = time.perf_counter()
        write_wav(source, size)
        size = source.stat().st_size
        print(f"generated {size / MIB:.0f} MiB WAV ({size / (SAMPLE_RATE * CHANNELS * SAMPLE_BYTES) / 3600:.2f} h) "
              f"in {time.perf_counter() - started:.1f} s under {work}")  # fmt: skip
        warmup = work / "warmup.wav"
        write_wav(warmup, SAMPLE_RATE * CHANNELS * SAMPLE_BYTES)

        data_dir = work / "data"
        env = {
            **os.environ,
            "DATA_DIR": str(data_dir),
            "DATABASE_URL": "",
            "CELERY_BROKER_URL": "filesystem://",
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "S3_BUCKET": "",
            "DJANGO_SETTINGS_MODULE": "whisper_site.settings",
        }
        subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "whisper_site.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", "1", "--worker-class", "gthread", "--threads", "4", "--timeout", "600",
             "--log-level", "warning"],
            # Run from the temporary folder: the filesystem broker writes a
            # "control" folder into the working directory.
            cwd=work, env={**env, "PYTHONPATH": str(ROOT)}, start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}/api/v1"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("the server did not start")
        worker = children(server.pid)[0]
        session_id = str(
            request_json(f"{base}/user/register", {"username": "bench", "password": "Bench-Passw0rd!"})["session_id"]
        )
        # A first small upload loads what the upload path imports (PyAV,
        # BLAKE3): the growth measured below is the big upload's own.
        curl_upload(f"{base}/file", warmup, session_id)

        baseline = rss_kib(worker)
        peak = baseline
        # Reset the worker's high-water mark (registration's Argon2 hash
        # alone takes 100 MiB), so VmHWM below is the rounds' own peak.
        try:
            with open(f"/proc/{worker}/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
            hwm_reset = True
        except OSError:
            hwm_reset = False
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_kib(worker))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cp_times: list[float] = []
        upload_times: list[float] = []
        sendfile_times: list[float] = []

        def delete(uuid: object) -> None:
            # So that the next upload is a new one, not a duplicate.
            request = urllib.request.Request(
                f"{base}/file/{uuid}", method="DELETE", headers={"Authorization": f"Basic {session_id}"}
            )
            urllib.request.urlopen(request, timeout=60).read()

        for _ in range(args.rounds):
            # Each timing starts with no dirty pages left by the previous
            # step, so neither pays for the other's writeback.
            copy = work / "copy.wav"
            os.sync()
            started = time.perf_counter()
            subprocess.run(["cp", str(source), str(copy)], check=True)
            cp_times.append(time.perf_counter() - started)
            copy.unlink()
            for times, client in ((upload_times, "curl"), (sendfile_times, "sendfile")):
                os.sync()
                if client == "curl":
                    seconds, answer = curl_upload(f"{base}/file", source, session_id)
                else:
                    seconds, answer = sendfile_upload(port, source, session_id)
                times.append(seconds)
                row = answer["files"][0]  # type: ignore[index]
                if not row["status"]["uploaded"]:  # type: ignore[index]
                    raise SystemExit(f"unexpected answer: {row}")
                delete(row["uuid"])
        stop.set()
        sampler.join()
        peak = max(peak, rss_kib(worker))
        high_water = rss_kib(worker, "VmHWM") if hwm_reset else peak

        cp_rate = size / MIB / statistics.median(cp_times)
        upload_rate = size / MIB / statistics.median(upload_times)
        print(
            f"cp:     median {statistics.median(cp_times):6.2f} s  {cp_rate:8.1f} MiB/s   "
            f"(rounds: {', '.join(f'{t:.2f}' for t in cp_times)} s)"
        )
        print(
            f"upload: median {statistics.median(upload_times):6.2f} s  {upload_rate:8.1f} MiB/s   "
            f"(rounds: {', '.join(f'{t:.2f}' for t in upload_times)} s; POST /file, curl -F, gunicorn gthread)"
        )
        print(f"ratio upload/cp: {upload_rate / cp_rate:.2f}  (target >= 0.50)")
        sendfile_rate = size / MIB / statistics.median(sendfile_times)
        print(
            f"upload: median {statistics.median(sendfile_times):6.2f} s  {sendfile_rate:8.1f} MiB/s   "
            f"(rounds: {', '.join(f'{t:.2f}' for t in sendfile_times)} s; same POST, client using sendfile(2))"
        )
        print(f"ratio upload/cp with the sendfile client: {sendfile_rate / cp_rate:.2f}")
        print(
            f"worker RSS: {baseline / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB sampled every 20 ms "
            f"(VmHWM {high_water / 1024:.1f} MiB): growth {(max(peak, high_water) - baseline) / 1024:.1f} MiB "
            f"(target < 64)"
        )
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
