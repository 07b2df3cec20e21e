"""The README's first command, run for real: `make run` sets up and serves a page."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, response.read()


def test_make_run_serves_the_home_page_and_reuses_its_instance(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "INTAKE_INSTANCE_PATH": str(tmp_path / "instance")}
    for attempt in ("first", "second"):
        server = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    status, body = _get(f"http://127.0.0.1:{port}/")
                    break
                except OSError:
                    assert server.poll() is None, (
                        server.stdout.read().decode() if server.stdout else ""
                    )
                    assert time.monotonic() < deadline, "make run did not serve in time"
                    time.sleep(0.3)
            assert status == 200 and b"<h1>" in body
            assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            output = server.communicate(timeout=30)[0].decode()
        if attempt == "first":
            assert "secret key: created" in output
            config = (tmp_path / "instance" / "config.toml").read_text()
        else:
            assert "secret key: kept" in output and "keyring: kept" in output
            assert (tmp_path / "instance" / "config.toml").read_text() == config
