"""Submission throughput: whole visitors against Intake and the floor app, in the same run.

Usage (from the repository root):

    .venv/bin/python -m bench.load --database sqlite --clients 8 32 --seconds 60
    .venv/bin/python -m bench.load --database postgresql --clients 8 32 --seconds 60
    .venv/bin/python -m bench.load --database postgresql --postgres-url postgresql+psycopg://...

Each client is one visitor after another on 127.0.0.1: GET the form, read its hidden fields
(csrf_token, form_token, consent_version, consent_language), fill in valid answers, POST, and
follow the 303 to the confirmation page (200, showing the reference). Both servers run under
gunicorn (``--no-control-socket``, sync workers unless ``--threads``) on free ports; Intake is
a development instance made by ``flask dev init`` in a temporary instance folder, with the
rate limits raised out of the way. For each number of clients, the floor and Intake are
measured back to back (``--rounds`` alternates them again), and the report gives:

- accepted submissions/s: visits whose confirmation page arrived inside the measured window;
- p50/p95/p99 latency of the POST (the submission itself) and of the whole visit;
- errors: any answer other than the expected one, or a failed connection;
- server CPU-ms per submission: utime+stime of the gunicorn master and its workers (and of
  the PostgreSQL cluster, when this script started it), read from /proc before and after;
- the ratio Intake/floor of each.

Results go to bench/results/load-<database>-<timestamp>.json with the machine they ran on.
The module also serves the fault tests (tests/test_faults.py): Visitor, Gunicorn, PgCluster.
"""

from __future__ import annotations

import argparse
import html
import http.client
import importlib.metadata
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results"
HOST = "127.0.0.1"
INPUT_TAG = re.compile(r"<input\b[^>]*>", re.I)
ATTRIBUTE = re.compile(r'([a-zA-Z_:-]+)="([^"]*)"')
REFERENCE = re.compile(r'id="reference">([^<]+)<')
WITHDRAWAL_CODE = re.compile(r'id="withdrawal-code">([^<]+)<')
HIGH_LIMIT = "1000000 per minute"


# ---------------------------------------------------------------------------- machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def machine(postgres_version: str | None = None) -> dict[str, Any]:
    model = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    for package in ("flask", "sqlalchemy", "gunicorn", "flask-wtf", "cryptography", "psycopg"):
        with suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version,
        "platform": platform.platform(),
        "packages": versions,
        "load_average": os.getloadavg(),
    }


# ---------------------------------------------------------------------------- process CPU

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its live children, plus what its reaped children used."""
    total = 0.0
    for process in [pid, *children(pid)]:
        fields = _stat(process)
        if fields is not None:  # utime, stime, cutime, cstime are fields 14-17
            total += sum(int(value) for value in fields[11:15]) / TICKS
    return total


# ---------------------------------------------------------------------------- HTTP visitor


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str
    seconds: float

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden inputs of a page, as a browser would send them back."""
    fields = {}
    for tag in INPUT_TAG.findall(page):
        attributes = {k.lower(): html.unescape(v) for k, v in ATTRIBUTE.findall(tag)}
        if attributes.get("type", "").lower() == "hidden" and "name" in attributes:
            fields[attributes["name"]] = attributes.get("value", "")
    return fields


def marker(length: int = 8) -> str:
    return "".join(random.choice(string.ascii_letters) for _ in range(length))


def valid_answers(mark: str) -> dict[str, str]:
    """A complete, valid intake form (an adult filling it in for themselves)."""
    return {
        "filler": "self",
        "representative_authority": "",
        "cancer_type": "breast",
        "cancer_other": "",
        "birth_day": "14",
        "birth_month": "7",
        "birth_year": "1968",
        "full_name": f"Ana {mark}",
        "email": f"ana.{mark.lower()}@example.org",
        "phone": "(415) 555-2671",
        "postal_code": "94110",
        "country": "US",
        "contact_method": "email",
        "agree": "y",
        "signature": f"Ana {mark}",
    }


class Visitor:
    """One browser: a cookie jar and one connection per request (gunicorn sync workers close)."""

    def __init__(
        self, port: int, path: str = "/", timeout: float = 30.0, headers: Mapping[str, str] = {}
    ) -> None:
        self.port = port
        self.path = path
        self.timeout = timeout
        self.headers = {"Accept-Language": "en", **headers}
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, target: str, body: bytes | None = None, **headers: str
    ) -> Answer:
        sent = {**self.headers, **headers}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        start = time.perf_counter()
        connection = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        try:
            connection.request(method, target, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
            for line in response.headers.get_all("Set-Cookie") or []:
                jar: SimpleCookie = SimpleCookie()
                jar.load(line)
                for name, morsel in jar.items():
                    if morsel.value and morsel["max-age"] != "0":
                        self.cookies[name] = morsel.value
                    else:
                        self.cookies.pop(name, None)
            headers_seen = {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()
        text = data.decode("utf-8", "replace")
        return Answer(response.status, headers_seen, text, time.perf_counter() - start)

    def open_form(self) -> tuple[Answer, dict[str, str]]:
        answer = self.request("GET", self.path)
        if answer.status != 200:
            raise UnexpectedAnswer("form", answer)
        return answer, hidden_fields(answer.body)

    def post_form(self, fields: Mapping[str, str], target: str | None = None) -> Answer:
        body = urllib.parse.urlencode(fields).encode()
        return self.request("POST", target or self.path, body)

    def follow(self, answer: Answer) -> Answer:
        location = urllib.parse.urlsplit(answer.location)
        target = location.path + (f"?{location.query}" if location.query else "")
        return self.request("GET", target)


class UnexpectedAnswer(Exception):
    def __init__(self, step: str, answer: Answer) -> None:
        super().__init__(f"{step}: HTTP {answer.status}")
        self.step = step
        self.answer = answer


@dataclass
class Visit:
    """One whole visit: what was sent and what came back."""

    form_token: str
    reference: str
    withdrawal_code: str | None
    post_seconds: float
    visit_seconds: float


def visit(visitor: Visitor, mark: str | None = None) -> Visit:
    """GET the form, fill it in, POST it, follow the 303; raise UnexpectedAnswer otherwise."""
    start = time.perf_counter()
    _page, hidden = visitor.open_form()
    fields = {**hidden, **valid_answers(mark or marker())}
    posted = visitor.post_form(fields)
    if posted.status != 303:
        raise UnexpectedAnswer("post", posted)
    confirmation = visitor.follow(posted)
    found = REFERENCE.search(confirmation.body)
    if confirmation.status != 200 or found is None:
        raise UnexpectedAnswer("confirmation", confirmation)
    code = WITHDRAWAL_CODE.search(confirmation.body)
    return Visit(
        hidden.get("form_token", ""),
        html.unescape(found.group(1)),
        html.unescape(code.group(1)) if code else None,
        posted.seconds,
        time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------- gunicorn


class Gunicorn:
    """One gunicorn master started here, stopped only by its own PID (never by name)."""

    def __init__(
        self,
        app: str,
        env: Mapping[str, str],
        folder: Path,
        *,
        workers: int = 4,
        threads: int = 1,
        port: int | None = None,
        name: str = "gunicorn",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.extra_args = list(extra_args)
        self.env = dict(env)
        self.workers = workers
        self.threads = threads
        self.port = port or free_port()
        self.pidfile = folder / f"{name}.pid"
        self.logfile = folder / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        command = [str(BIN / "gunicorn"), "--no-control-socket", "--pid", str(self.pidfile)]
        command += ["-w", str(self.workers), "-b", f"{HOST}:{self.port}", "--timeout", "60"]
        if self.threads > 1:
            command += ["--threads", str(self.threads)]
        return [*command, *self.extra_args, self.app]

    def start(self, timeout: float = 60.0) -> Gunicorn:
        self.pidfile.unlink(missing_ok=True)
        with self.logfile.open("ab") as log:
            self.process = subprocess.Popen(  # the master itself: Popen.pid is its PID
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start:\n{self.log()[-3000:]}")
            with suppress(OSError, http.client.HTTPException):
                answer = Visitor(self.port, timeout=5).request("GET", "/healthz")
                if answer.status == 200 and len(children(self.process.pid)) >= self.workers:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer in {timeout} s:\n{self.log()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        return children(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def kill9(self) -> None:
        """SIGKILL the master and every worker at once, as a power cut would."""
        assert self.process is not None
        victims = [self.pid, *self.worker_pids()]
        for pid in victims:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in victims[1:]):
            time.sleep(0.02)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # quick shutdown: nothing is in flight
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.process = None

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


# ---------------------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path | None:
    override = os.environ.get("INTAKE_TEST_PG_BIN")
    if override:
        return Path(override) if (Path(override) / "initdb").exists() else None
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return None
    versions = sorted(
        (p for p in root.iterdir() if p.name.isdigit() and (p / "bin" / "initdb").exists()),
        key=lambda p: int(p.name),
    )
    return versions[-1] / "bin" if versions else None


def run_as_postgres(command: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user there."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PgCluster:
    """A throwaway PostgreSQL cluster of its own (like tests/conftest.py), stoppable at will."""

    def __init__(self, bin_dir: Path, *, durable: bool = True) -> None:
        self.bin = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="intake-bench-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self.data = self.base / "data"
        self.port = free_port()
        self.durable = durable
        initdb = [str(bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        self._run([*initdb, "--no-sync", "--no-locale", "-E", "UTF8"], as_postgres=True)

    def _run(self, command: list[str], *, as_postgres: bool = False) -> None:
        result = subprocess.run(
            run_as_postgres(command) if as_postgres else command,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)}\n{result.stderr}")

    def start(self) -> PgCluster:
        options = f"-p {self.port} -k {self.base} -c listen_addresses={HOST} -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log")]
        self._run([*command, "-w", "-o", options, "start"], as_postgres=True)
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                as_postgres=True,
            )

    def createdb(self, name: str) -> str:
        command = [str(self.bin / "createdb"), "-h", HOST, "-p", str(self.port), "-U", "postgres"]
        self._run([*command, name])
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/{name}"

    def postmaster_pid(self) -> int | None:
        with suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def cpu_seconds(self) -> float:
        pid = self.postmaster_pid()
        return cpu_seconds(pid) if pid else 0.0

    def version(self) -> str:
        result = subprocess.run(
            [str(self.bin / "postgres"), "--version"], capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


# ---------------------------------------------------------------------------- the two servers


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without INTAKE_*/FLOOR_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTAKE_", "FLOOR_"))}
    env.update(extra)
    return env


def intake_environment(instance: Path, database_url: str | None, **settings: str) -> dict[str, str]:
    env = clean_environment(
        **{
            "INTAKE_INSTANCE_PATH": str(instance),
            "INTAKE_ENV": "development",
            "INTAKE_SUBMIT_RATE_LIMIT": HIGH_LIMIT,
            "INTAKE_WITHDRAW_RATE_LIMIT": HIGH_LIMIT,
            "INTAKE_LOG_LEVEL": "WARNING",
            **settings,
        }
    )
    if database_url:
        env["INTAKE_DATABASE_URL"] = database_url
    return env


def run_flask(
    env: Mapping[str, str], *args: str, stdin: str | None = None, timeout: float | None = None
) -> str:
    """``flask --app intake ARGS`` as a person would run it; its output, or RuntimeError."""
    result = subprocess.run(
        [str(BIN / "flask"), "--app", "intake", *args],
        cwd=ROOT,
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if result.returncode:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def make_intake(
    folder: Path,
    database_url: str | None,
    workers: int,
    threads: int,
    extra_args: Sequence[str] = (),
    **settings: str,
) -> Gunicorn:
    """A development instance made by `flask dev init` in its own instance folder."""
    folder.mkdir(parents=True, exist_ok=True)
    instance = folder / "instance"
    env = intake_environment(instance, database_url, **settings)
    run_flask(env, "dev", "init")
    return Gunicorn(
        "intake.wsgi:app",
        env,
        folder,
        workers=workers,
        threads=threads,
        name="intake",
        extra_args=extra_args,
    )


def make_floor(folder: Path, database_url: str | None, workers: int, threads: int) -> Gunicorn:
    folder.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{folder / 'floor.sqlite3'}"
    from bench.floor_app import init_db

    init_db(url)
    env = clean_environment(FLOOR_DATABASE_URL=url, FLOOR_SECRET_KEY=secrets.token_urlsafe(32))
    return Gunicorn(
        "bench.floor_app:app", env, folder, workers=workers, threads=threads, name="floor"
    )


# ---------------------------------------------------------------------------- measuring


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


@dataclass
class Tally:
    visits: list[tuple[float, float, float]] = field(default_factory=list)  # end, post, visit
    errors: list[tuple[float, str]] = field(default_factory=list)


def drive(
    port: int, clients: int, seconds: float, warmup: float, cpu: Any = None
) -> dict[str, Any]:
    """``clients`` visitors in a closed loop; measure the window after ``warmup``."""
    stop = threading.Event()
    tallies = [Tally() for _ in range(clients)]

    def client(tally: Tally) -> None:
        while not stop.is_set():
            try:
                done = visit(Visitor(port))
                tally.visits.append((time.monotonic(), done.post_seconds, done.visit_seconds))
            except UnexpectedAnswer as error:
                tally.errors.append((time.monotonic(), f"{error.step} {error.answer.status}"))
            except (OSError, http.client.HTTPException) as error:
                tally.errors.append((time.monotonic(), type(error).__name__))
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in tallies]
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    start, cpu_start, client_start = time.monotonic(), cpu() if cpu else 0.0, time.process_time()
    time.sleep(seconds)
    end, cpu_end, client_end = time.monotonic(), cpu() if cpu else 0.0, time.process_time()
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    window = end - start
    done = [v for t in tallies for v in t.visits if start <= v[0] <= end]
    errors = [e for t in tallies for e in t.errors if start <= e[0] <= end]
    kinds: dict[str, int] = {}
    for _when, kind in errors:
        kinds[kind] = kinds.get(kind, 0) + 1
    accepted = len(done)
    posts = [v[1] * 1000 for v in done]
    visits = [v[2] * 1000 for v in done]
    return {
        "clients": clients,
        "seconds": round(window, 2),
        "accepted": accepted,
        "submissions_per_s": accepted / window,
        "post_ms": {f"p{p}": percentile(posts, p / 100) for p in (50, 95, 99)},
        "visit_ms": {f"p{p}": percentile(visits, p / 100) for p in (50, 95, 99)},
        "errors": len(errors),
        "error_kinds": kinds,
        "server_cpu_ms_per_submission": (
            (cpu_end - cpu_start) * 1000 / accepted if accepted and cpu else None
        ),
        "client_cpu_ms_per_submission": (
            (client_end - client_start) * 1000 / accepted if accepted else None
        ),
    }


@contextmanager
def servers(args: argparse.Namespace, folder: Path) -> Iterator[dict[str, Any]]:
    """Start the floor and Intake (and a PostgreSQL cluster if asked); stop all of them."""
    cluster: PgCluster | None = None
    started: list[Gunicorn] = []
    try:
        intake_url = floor_url = None
        pg_version = None
        if args.database == "postgresql":
            if args.postgres_url:
                intake_url = floor_url = args.postgres_url
            else:
                bin_dir = postgres_bin()
                if bin_dir is None:
                    sys.exit("PostgreSQL is not installed: apt-get install postgresql")
                cluster = PgCluster(bin_dir, durable=not args.pg_no_fsync).start()
                intake_url, floor_url = cluster.createdb("intake"), cluster.createdb("floor")
                pg_version = cluster.version()
        floor = make_floor(folder / "floor", floor_url, args.workers, args.threads)
        settings = {}
        if args.ratelimit_storage:
            settings["INTAKE_RATELIMIT_STORAGE_URI"] = args.ratelimit_storage
        intake = make_intake(folder / "intake", intake_url, args.workers, args.threads, **settings)
        for server in (floor, intake):
            started.append(server.start())

        def cpu_of(server: Gunicorn) -> Any:
            return lambda: server.cpu_seconds() + (cluster.cpu_seconds() if cluster else 0.0)

        yield {
            "floor": (floor, cpu_of(floor)),
            "intake": (intake, cpu_of(intake)),
            "postgresql": pg_version,
        }
    finally:
        for server in started:
            server.stop()
        if cluster is not None:
            cluster.destroy()


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare(floor: dict[str, Any], intake: dict[str, Any]) -> dict[str, Any]:
    return {
        "throughput": ratio(intake["submissions_per_s"], floor["submissions_per_s"]),
        "post_p99": ratio(intake["post_ms"]["p99"], floor["post_ms"]["p99"]),
        "server_cpu_per_submission": ratio(
            intake["server_cpu_ms_per_submission"], floor["server_cpu_ms_per_submission"]
        ),
    }


def fmt(value: float | None, pattern: str = "{:,.0f}") -> str:
    return "–" if value is None else pattern.format(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--postgres-url", help="use this database instead of a new cluster")
    parser.add_argument(
        "--pg-no-fsync", action="store_true", help="run the new cluster with fsync=off"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured time per run")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers per server")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--rounds", type=int, default=1, help="alternate floor/Intake this often")
    parser.add_argument(
        "--ratelimit-storage", help="Intake's INTAKE_RATELIMIT_STORAGE_URI (default memory://)"
    )
    parser.add_argument("--note", default="", help="free text stored with the result")
    args = parser.parse_args()

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="intake-load-") as tmp, servers(args, Path(tmp)) as s:
        report: dict[str, Any] = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(s["postgresql"]),
            "database": args.database,
            "workers": args.workers,
            "threads": args.threads,
            "ratelimit_storage": args.ratelimit_storage or "memory://",
            "note": args.note,
            "command": " ".join(sys.argv),
        }
        for clients in args.clients:
            for round_number in range(args.rounds):
                result: dict[str, Any] = {"clients": clients, "round": round_number}
                for name in ("floor", "intake"):
                    server, cpu = s[name]
                    result[name] = drive(server.port, clients, args.seconds, args.warmup, cpu)
                    print(f"  {name:6} {clients:3} clients: {result[name]['accepted']} accepted")
                result["intake_vs_floor"] = compare(result["floor"], result["intake"])
                runs.append(result)
        report["runs"] = runs
        report["machine"]["load_average_after"] = os.getloadavg()

    m = report["machine"]
    print(
        f"\nmachine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"SQLite {m['sqlite']}" + (f", {m['postgresql']}" if m["postgresql"] else "")
    )
    print(f"load average before/after: {m['load_average']} / {m['load_average_after']}")
    print(f"database: {args.database}, gunicorn workers: {args.workers}x{args.threads}\n")
    header = ["clients", "app", "subm/s", "POST p50", "p95", "p99", "visit p99", "errors"]
    header += ["server CPU-ms/subm", "client CPU-ms/subm"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for run in runs:
        for name in ("floor", "intake"):
            r = run[name]
            print(
                "| "
                + " | ".join(
                    [
                        str(run["clients"]),
                        name,
                        fmt(r["submissions_per_s"], "{:,.1f}"),
                        fmt(r["post_ms"]["p50"], "{:,.1f}"),
                        fmt(r["post_ms"]["p95"], "{:,.1f}"),
                        fmt(r["post_ms"]["p99"], "{:,.1f}"),
                        fmt(r["visit_ms"]["p99"], "{:,.1f}"),
                        str(r["errors"]),
                        fmt(r["server_cpu_ms_per_submission"], "{:,.2f}"),
                        fmt(r["client_cpu_ms_per_submission"], "{:,.2f}"),
                    ]
                )
                + " |"
            )
        c = run["intake_vs_floor"]
        cpu_ratio = fmt(c["server_cpu_per_submission"], "{:.2f}x")
        print(
            f"| {run['clients']} | Intake/floor | {fmt(c['throughput'], '{:.2f}x')} | | |"
            f" {fmt(c['post_p99'], '{:.2f}x')} | | | {cpu_ratio} | |"
        )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"load-{args.database}-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
