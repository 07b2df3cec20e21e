"""A flood from one address against Intake under gunicorn: is the submit limit shared?

Usage (from the repository root):

    .venv/bin/python -m bench.flood                      # memory:// (the default storage)
    .venv/bin/python -m bench.flood --redis              # a private redis-server on a free port
    .venv/bin/python -m bench.flood --storage redis://127.0.0.1:6379/0

Intake runs with ``INTAKE_SUBMIT_RATE_LIMIT="10 per minute"`` and ``INTAKE_TRUSTED_PROXIES=1``,
so each request's ``X-Forwarded-For`` stands for a different client address. ``--visits``
whole visits (GET the form, POST it) come from one address, ``--clients`` at a time, then a
few from another address. With a storage shared by the workers, exactly 10 are accepted; with
``memory://`` each worker counts on its own, and up to 10 per worker get through. The access
log's PID column shows how many workers served the POSTs.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.load import Visitor, free_port, make_intake, marker, valid_answers


def flood(port: int, address: str, visits: int, clients: int = 8) -> Counter[int]:
    """``visits`` whole visits from one client address, ``clients`` at a time: POST statuses."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    remaining = list(range(visits))

    def client() -> None:
        while True:
            with lock:
                if not remaining:
                    return
                remaining.pop()
            visitor = Visitor(port, headers={"X-Forwarded-For": address})
            _page, hidden = visitor.open_form()
            answer = visitor.post_form({**hidden, **valid_answers(marker())})
            with lock:
                statuses[answer.status] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a free port of 127.0.0.1, no persistence; stop it by PID."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    port = free_port()
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [binary, *options, "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            process.wait()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="memory://", help="INTAKE_RATELIMIT_STORAGE_URI")
    parser.add_argument("--redis", action="store_true", help="start a private redis-server")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--visits", type=int, default=40)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intake-flood-") as tmp:
        folder = Path(tmp)
        redis_process = None
        server = None
        storage = args.storage
        access_log = folder / "access.log"
        try:
            if args.redis:
                redis_process, storage = start_redis(folder)
            server = make_intake(
                folder / "intake",
                None,
                args.workers,
                1,
                ("--access-logfile", str(access_log), "--access-logformat", "%(p)s %(m)s %(s)s"),
                INTAKE_RATELIMIT_STORAGE_URI=storage,
                INTAKE_SUBMIT_RATE_LIMIT="10 per minute",
                INTAKE_TRUSTED_PROXIES="1",
            )
            server.start()
            start = time.perf_counter()
            one = flood(server.port, "203.0.113.7", args.visits, args.clients)
            seconds = time.perf_counter() - start
            other = flood(server.port, "198.51.100.9", 3, 1)
            lines = access_log.read_text().splitlines()
            workers = {line.split()[0] for line in lines if " POST " in line}
        finally:
            if server is not None:
                server.stop()
            if redis_process is not None:
                redis_process.terminate()
                redis_process.wait(timeout=10)
    print(f"storage {storage.split(':')[0]}, {args.workers} workers, limit 10 per minute")
    print(f"flooding address: {dict(one)} in {seconds:.1f} s ({args.visits} visits)")
    print(f"another address:  {dict(other)}")
    print(f"POSTs served by {len(workers)} workers")


if __name__ == "__main__":
    main()
