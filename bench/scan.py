"""Security scanners against a live Intake on 127.0.0.1: sqlmap on every form and query
parameter, then wapiti over both surfaces (issue 5, "Scanners").

Usage (from the repository root; the scanners live in their own venv, never in .venv):

    python3 -m venv bench/.scanners
    bench/.scanners/bin/pip install sqlmap wapiti3==3.2.3
    .venv/bin/python -m bench.scan                      # everything (bench/README.md)
    .venv/bin/python -m bench.scan --only sqlmap --targets withdraw login

The whole run (server and scanners) happens inside ``unshare -n`` with only the loopback
interface up: wapiti looks up an outside name at start, and nothing here may leave the machine.
The script re-executes itself that way unless ``--no-netns`` is given.

What it sets up: a development instance (``flask dev init`` in a temporary instance folder) with
the patient rate limits raised out of the way, staff sessions allowed 4 hours idle (a scan keeps
one cookie), and the sign-in lockout lifted (``scan_app``) so the scanners reach the code behind
it; 60 submissions sent through the form (so list pages have rows and a second page); an admin
account signed in once with password and TOTP, whose staff cookie is handed to the scanners.
gunicorn runs with ``--no-control-socket --pid FILE`` on a free port and is stopped by its PID.
Reports land in bench/results/scan-<time>/ (sqlmap's output folders, wapiti's JSON and txt).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wtforms.fields.core import UnboundField

from bench.load import (
    HOST,
    RESULTS,
    ROOT,
    Gunicorn,
    Visitor,
    free_port,
    intake_environment,
    machine,
    run_flask,
    valid_answers,
    visit,
)
from intake.patient.forms import IntakeForm

SCANNERS = ROOT / "bench" / ".scanners"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SHOWN_KEY = re.compile(r'<code class="staff-secret">([A-Z2-7 ]+)</code>')
OPTION = re.compile(r'<option value="([^"]*)"')
STAFF_EMAIL = "scanner@example.org"
STAFF_PASSWORD = "scanner-password-for-tests-only"
# Any value of the right shape is a valid idempotency token; sqlmap randomizes it per request so
# every POST is a new submission rather than a replay of the first one.
FORM_TOKEN = "scanTOKENabcdefghijklmnopqrstuvwxyz0123456789"
# Every field the intake form reads except its idempotency token (randomized above).
PATIENT_FIELDS = [
    name
    for name, field in vars(IntakeForm).items()
    if isinstance(field, UnboundField) and name != "form_token"
]


# ---------------------------------------------------------------------------- the instance


def scan_app() -> Any:
    """Intake as served, with the staff sign-in lockout lifted for the scanners.

    The lockout (5 failures per account, 20 per address in 15 minutes) would otherwise answer
    every sqlmap probe of the sign-in form with the same 429 before the email or password is
    ever looked at. It is tested on its own in the suite.
    """
    from intake import accounts, create_app

    original = accounts.guard_from_secret

    def unlimited(secret_key: str) -> accounts.LoginGuard:
        guard = original(secret_key)
        return accounts.LoginGuard(key=guard.key, account_failures=10**9, ip_failures=10**9)

    accounts.guard_from_secret = unlimited
    return create_app()


def staff_sign_in(port: int) -> Visitor:
    """Password, the enrolment page (its key read as an app would), the code, an own password."""
    import pyotp

    staff = Visitor(port)
    page = staff.request("GET", "/coordinator/login")
    form = {"csrf_token": CSRF.search(page.body).group(1)}  # type: ignore[union-attr]
    answer = staff.post_form(
        {**form, "email": STAFF_EMAIL, "password": STAFF_PASSWORD}, "/coordinator/login"
    )
    assert answer.status == 303, answer.status
    second = urllib.parse.urlsplit(answer.location).path
    page = staff.request("GET", second)
    key = SHOWN_KEY.search(page.body).group(1).replace(" ", "")  # type: ignore[union-attr]
    csrf = CSRF.search(page.body).group(1)  # type: ignore[union-attr]
    answer = staff.post_form({"csrf_token": csrf, "code": pyotp.TOTP(key).now()}, second)
    assert answer.status == 303, (answer.status, answer.body[:2000])
    third = urllib.parse.urlsplit(answer.location).path
    page = staff.request("GET", third)
    csrf = CSRF.search(page.body).group(1)  # type: ignore[union-attr]
    own = STAFF_PASSWORD + " (own)"
    answer = staff.post_form(
        {"csrf_token": csrf, "new_password": own, "confirm_password": own}, third
    )
    assert answer.status == 303, (answer.status, answer.body[:2000])
    home = staff.request("GET", "/coordinator/")
    assert home.status == 200 and "Sign out" in home.body, home.status
    return staff


def cookie_header(visitor: Visitor) -> str:
    return "; ".join(f"{k}={v}" for k, v in visitor.cookies.items())


# ---------------------------------------------------------------------------- targets


@dataclass
class Target:
    """One sqlmap run: a URL, its form data, the parameters to test."""

    name: str
    url: str
    params: list[str]
    data: dict[str, str] | None = None
    csrf_url: str | None = None
    cookie: str | None = None
    randomize: list[str] = field(default_factory=list)

    def command(self, sqlmap: Path, out: Path, level: int, risk: int, dbms: str) -> list[str]:
        command = [str(sqlmap), "-u", self.url, "--batch", "--level", str(level)]
        if dbms:
            command += ["--dbms", dbms]
        command += ["--risk", str(risk), "-p", ",".join(self.params), "--flush-session"]
        command += ["--output-dir", str(out / "sqlmap" / self.name), "--disable-coloring"]
        command += ["--drop-set-cookie", "--timeout", "30", "--retries", "1"]
        if self.data is not None:
            command += ["--data", urllib.parse.urlencode(self.data)]
        if self.csrf_url:
            command += ["--csrf-token", "csrf_token", "--csrf-url", self.csrf_url]
        if self.cookie:
            command += ["--cookie", self.cookie]
        if self.randomize:
            command += ["--randomize", ",".join(self.randomize)]
        return command


def patient_targets(base: str, port: int) -> list[Target]:
    targets = []
    for path in ("/", "/embed"):
        visitor = Visitor(port, path)
        _page, hidden = visitor.open_form()
        data = {**hidden, **valid_answers("Scan"), "source": "scan", "website": ""}
        data["form_token"] = FORM_TOKEN
        name = "patient-form" if path == "/" else "embed-form"
        targets.append(
            Target(
                name,
                f"{base}{path}?lang=en&source=scan",
                ["lang", "source", *PATIENT_FIELDS],
                data,
                csrf_url=f"{base}{path}",
                cookie=cookie_header(visitor),
                randomize=["form_token"],
            )
        )
    # A real reference and withdrawal code, so one probe in the set is a match.
    done = visit(Visitor(port), "Withdraw")
    withdraw = Visitor(port, "/withdraw")
    _page, hidden = withdraw.open_form()
    targets.append(
        Target(
            "withdraw",
            f"{base}/withdraw?lang=en",
            ["lang", "reference", "code"],
            {**hidden, "reference": done.reference, "code": done.withdrawal_code or "X"},
            csrf_url=f"{base}/withdraw",
            cookie=cookie_header(withdraw),
        )
    )
    login = Visitor(port, "/coordinator/login")
    page = login.request("GET", "/coordinator/login")
    targets.append(
        Target(
            "staff-login",
            f"{base}/coordinator/login?next=%2Fcoordinator%2Faudit",
            ["next", "email", "password"],
            {
                "csrf_token": CSRF.search(page.body).group(1),  # type: ignore[union-attr]
                "email": STAFF_EMAIL,
                "password": "not-the-password-1",
            },
            csrf_url=f"{base}/coordinator/login",
            cookie=cookie_header(login),
        )
    )
    return targets


def staff_targets(base: str, staff: Visitor) -> list[Target]:
    cookie = cookie_header(staff)
    home = staff.request("GET", "/coordinator/").body
    reference = re.search(r"/coordinator/submissions/([A-Z0-9-]+)", home)
    select = re.search(r'name="cancer_type".*?</select>', home, re.S)
    cancer = next((v for v in OPTION.findall(select.group(0) if select else "") if v), "breast")
    after = re.search(r"[?&;]after=([^&\"]+)", home)
    list_args = {
        "status": "new",
        "cancer_type": cancer,
        "received_from": "2020-01-01",
        "received_to": "2030-12-31",
        "age_band": "50-64",
        "assignee": "none",
        "source": "scan",
        "reference": reference.group(1) if reference else "7KQ2-M9XD",
    }
    audit = staff.request("GET", "/coordinator/audit").body
    before = re.search(r"[?&;]before=(\d+)", audit)
    audit_after = re.search(r"[?&;]after=(\d+)", audit)
    audit_args = {
        "actor": "user:1",
        "action": "submission.received",
        "from": "2020-01-01",
        "to": "2030-12-31",
    }
    return [
        Target(
            "coordinator-list",
            f"{base}/coordinator/?{urllib.parse.urlencode({**list_args, 'lang': 'en'})}",
            [*list_args, "lang"],
            cookie=cookie,
        ),
        Target(
            "coordinator-list-cursor",
            f"{base}/coordinator/?after={after.group(1) if after else '1'}",
            ["after"],
            cookie=cookie,
        ),
        Target(
            "coordinator-audit",
            f"{base}/coordinator/audit?"
            + urllib.parse.urlencode(
                {
                    **audit_args,
                    "before": before.group(1) if before else "100",
                    "after": audit_after.group(1) if audit_after else "1",
                }
            ),
            [*audit_args, "before", "after"],
            cookie=cookie,
        ),
        Target(
            "coordinator-charts",
            f"{base}/coordinator/charts?lang=en",
            ["lang"],
            cookie=cookie,
        ),
        Target(
            "coordinator-search",
            f"{base}/coordinator/search",
            ["email"],
            {"csrf_token": "x", "email": "ana.scan@example.org"},
            csrf_url=f"{base}/coordinator/",
            cookie=cookie,
        ),
        Target(
            "account-password",
            f"{base}/coordinator/account/password",
            ["current_password", "code", "new_password", "confirm_password"],
            {
                "csrf_token": "x",
                "current_password": "not-the-password-1",
                "code": "123456",
                "new_password": "scanner-new-password",
                "confirm_password": "scanner-new-password",
            },
            csrf_url=f"{base}/coordinator/account/password",
            cookie=cookie,
        ),
    ]


# ---------------------------------------------------------------------------- running


def run_logged(command: Sequence[str], log: Path, timeout: float) -> int:
    print("$", shlex.join(command), flush=True)
    with log.open("w") as out:
        out.write("$ " + shlex.join(command) + "\n")
        out.flush()
        try:
            return subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\n*** timed out after {timeout} s\n")
            return -1


def sqlmap_verdict(log: Path) -> dict[str, Any]:
    text = log.read_text(errors="replace")
    injectable = re.findall(r"Parameter: (\S+ \(\w+\))", text)
    return {
        "injectable": sorted(set(injectable)),
        "not_injectable": sorted(
            set(re.findall(r"(\S+) parameter '([^']+)' does not seem to be injectable", text))
        ),
        "all_tested_not_injectable": "all tested parameters do not appear to be injectable" in text,
        "http_codes": re.findall(r"HTTP error codes detected during run:\n(.*)", text),
        "warnings": sorted(set(re.findall(r"\[CRITICAL\] (.*)", text))),
    }


WAPITI_MODULES = "common,timesql,csrf,crlf,methods,xxe"
# The modules that send the most payloads per field; on the 20-field patient form they can use
# up their time on `/` before reaching `/embed` and `/withdraw`, so those get runs of their own.
HEAVY_MODULES = "xss,exec,file,timesql,sql,permanentxss"


def wapiti_command(
    wapiti: Path,
    base: str,
    out: Path,
    name: str,
    start: list[str],
    cookie: str | None,
    seconds: int,
    *,
    scope: str = "folder",
    modules: str = WAPITI_MODULES,
) -> list[str]:
    command = [str(wapiti), "-u", f"{base}{start[0]}", "--scope", scope, "--flush-session"]
    for url in start[1:]:
        command += ["-s", f"{base}{url}"]
    command += ["--endpoint", "http://127.0.0.1:9/", "-m", modules]
    command += ["--max-scan-time", str(seconds), "--max-attack-time", str(seconds // 4)]
    command += ["-f", "json", "-o", str(out / f"wapiti-{name}.json"), "--no-bugreport"]
    command += ["--store-session", str(out / "wapiti-session"), "-v", "1", "--tasks", "4"]
    # Never sign the scanner's own account out or lock it: those forms would end the scan.
    for path in ("/coordinator/logout", "/coordinator/users/*/disable", "/coordinator/users/*"):
        command += ["-x", f"{base}{path}"]
    if cookie:  # -C alone: with --drop-set-cookie or -H "Cookie: ..." wapiti 3.2.3 loses it
        command += ["-C", cookie]
    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scanners", type=Path, default=SCANNERS, help="venv with the tools")
    parser.add_argument("--only", choices=("sqlmap", "wapiti"))
    parser.add_argument("--targets", nargs="*", help="sqlmap targets by name (default: all)")
    parser.add_argument("--level", type=int, default=3)
    parser.add_argument("--risk", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4, help="sqlmap runs at once")
    parser.add_argument(
        "--dbms",
        default="SQLite",
        help="sqlmap --dbms (the scan instance's database; '' to let sqlmap try every DBMS)",
    )
    parser.add_argument("--wapiti-seconds", type=int, default=600, help="per wapiti run")
    parser.add_argument(
        "--wapiti-runs",
        nargs="*",
        default=["patient", "embed", "withdraw", "staff"],
        choices=["patient", "embed", "withdraw", "staff"],
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--no-netns", action="store_true", help="don't enter unshare -n")
    args = parser.parse_args()
    # SIGTERM (kill PID) ends the run through the finally clauses: scanners and server stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if not args.no_netns and os.environ.get("INTAKE_SCAN_NETNS") != "1":
        inner = [sys.executable, "-m", "bench.scan", *sys.argv[1:]]
        shell = "ip link set lo up && exec " + shlex.join(inner)
        env = {**os.environ, "INTAKE_SCAN_NETNS": "1"}
        os.execvpe("unshare", ["unshare", "-n", "sh", "-c", shell], env)

    sqlmap, wapiti = args.scanners / "bin" / "sqlmap", args.scanners / "bin" / "wapiti"
    for tool in (sqlmap, wapiti):
        if not tool.exists():
            sys.exit(f"{tool} is missing: see this module's docstring to install the scanners")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = RESULTS / f"scan-{stamp}"
    out.mkdir(parents=True)
    folder = Path(tempfile.mkdtemp(prefix="intake-scan-"))
    env = intake_environment(folder / "instance", None, INTAKE_SESSION_IDLE_MINUTES="240")
    run_flask(env, "dev", "init")
    run_flask(
        env, "users", "create", STAFF_EMAIL, "--role", "admin", "--password-stdin",
        stdin=STAFF_PASSWORD + "\n",
    )  # fmt: skip
    server = Gunicorn(
        "bench.scan:scan_app()", env, folder, workers=args.workers, port=free_port(), name="scan"
    )
    server.start()
    base = f"http://{HOST}:{server.port}"
    report: dict[str, Any] = {"started": stamp, "machine": machine(), "base": base}
    began = time.monotonic()
    try:
        for index in range(60):
            visit(Visitor(server.port), "Seed" + chr(65 + index % 26) + chr(65 + index // 26))
        staff = staff_sign_in(server.port)
        if args.only != "wapiti":
            targets = patient_targets(base, server.port) + staff_targets(base, staff)
            if args.targets:
                targets = [t for t in targets if t.name in args.targets]
            report["sqlmap"] = run_sqlmap(targets, sqlmap, out, args)
        if args.only != "sqlmap":
            report["wapiti"] = run_wapiti(wapiti, base, out, cookie_header(staff), args)
    finally:
        report["seconds"] = round(time.monotonic() - began)
        server.stop()
        errors = [line for line in server.log().splitlines() if "Traceback" in line]
        report["server_tracebacks"] = len(errors)
        (out / "server.log").write_text(server.log())
        shutil.rmtree(folder, ignore_errors=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    print(f"reports: {out.relative_to(ROOT)}")


def run_sqlmap(
    targets: list[Target], sqlmap: Path, out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    pending = list(targets)
    running: list[tuple[Target, subprocess.Popen[bytes], Path, float, Any]] = []
    try:
        _drive(pending, running, results, sqlmap, out, args)
    finally:
        for _target, process, _log, _started, handle in running:
            process.kill()
            process.wait()
            handle.close()
    return results


def _drive(
    pending: list[Target],
    running: list[tuple[Target, subprocess.Popen[bytes], Path, float, Any]],
    results: dict[str, Any],
    sqlmap: Path,
    out: Path,
    args: argparse.Namespace,
) -> None:
    while pending or running:
        while pending and len(running) < args.parallel:
            target = pending.pop(0)
            log = out / f"sqlmap-{target.name}.log"
            command = target.command(sqlmap, out, args.level, args.risk, args.dbms)
            print("$", shlex.join(command), flush=True)
            handle = log.open("w")
            handle.write("$ " + shlex.join(command) + "\n")
            handle.flush()
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
            running.append((target, process, log, time.monotonic(), handle))
        time.sleep(1)
        for entry in list(running):
            target, process, log, started, handle = entry
            if process.poll() is None and time.monotonic() - started < 1800:
                continue
            if process.poll() is None:
                process.kill()
                process.wait()
            handle.close()
            running.remove(entry)
            verdict = sqlmap_verdict(log)
            verdict["seconds"] = round(time.monotonic() - started)
            verdict["returncode"] = process.returncode
            results[target.name] = verdict
            print(target.name, json.dumps(verdict), flush=True)


def run_wapiti(
    wapiti: Path, base: str, out: Path, cookie: str, args: argparse.Namespace
) -> dict[str, Any]:
    runs = {
        "patient": (["/", "/?lang=es&source=scan", "/embed?lang=en&source=scan",
                     "/withdraw?lang=es", "/coordinator/login?next=%2Fcoordinator%2F"], None),
        "staff": (["/coordinator/", "/coordinator/?status=new&assignee=none&source=scan",
                   "/coordinator/audit?action=submission.received", "/coordinator/charts?lang=en",
                   "/coordinator/users"], cookie),
    }  # fmt: skip
    page_runs = {"embed": "/embed?lang=en&source=scan", "withdraw": "/withdraw?lang=en"}
    results: dict[str, Any] = {}
    for name in args.wapiti_runs:
        if name in page_runs:
            command = wapiti_command(
                wapiti, base, out, name, [page_runs[name]], None, args.wapiti_seconds,
                scope="page", modules=HEAVY_MODULES,
            )  # fmt: skip
        else:
            start, jar = runs[name]
            command = wapiti_command(wapiti, base, out, name, start, jar, args.wapiti_seconds)
        code = run_logged(command, out / f"wapiti-{name}.log", args.wapiti_seconds * 3)
        found: dict[str, Any] = {"returncode": code}
        report = out / f"wapiti-{name}.json"
        if report.exists():
            data = json.loads(report.read_text())
            for section in ("vulnerabilities", "anomalies", "additionals"):
                found[section] = {
                    kind: [
                        f"{item.get('method')} {item.get('path')} {item.get('parameter')}: "
                        f"{item.get('info')}"
                        for item in items
                    ]
                    for kind, items in data.get(section, {}).items()
                    if items
                }
            found["crawled"] = len(data.get("infos", {}).get("crawled_pages", []) or [])
        results[name] = found
    return results


if __name__ == "__main__":
    main()
