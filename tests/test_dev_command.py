"""`make dev` (python -m tools.dev) as a newcomer runs it: against given DATABASE_URL / NATS_URL,
twice in a row, with the printed login line working, an invoice paid by card through its local Stripe
(docs/billing.md's walk-through), the README's command blocks and docs/auth.md's create-org line run
as written (the latter from a second shell), and Ctrl-C stopping everything; seed 004's "Jobs /
Scheduler" steps, unchanged and from a second shell, against `make dev` with JOBS_ENABLED=true; and
start-up mistakes said in one sentence, before anything starts."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from conftest import MAKE_DEV_POOL_SIZE
from libs.common.settings import DEV_ENV_FILE, read_env_file, use_dev_env
from tools.dev import DEFAULT_OWNER_EMAIL, DEFAULT_OWNER_PASSWORD, SERVICES, _write_dev_env
from tools.devstack import ROOT, free_port
from tools.processes import wait_until

BASIC = ("admin", "Demo-admin-basic-password-1")


def _free_ports() -> dict[str, str]:
    # Every port on a free one, so a developer's own `make dev` may run beside the tests.
    ports = {"GATEWAY_PORT": str(free_port()), "WEB_PORT": str(free_port())}
    for service in SERVICES:
        ports[f"{service.upper()}_GRPC_PORT"] = str(free_port())
        ports[f"{service.upper()}_HTTP_PORT"] = str(free_port())
    return ports


def _run_dev(stack, env_extra: dict[str, str], then=None) -> tuple[int, str]:
    env = {
        **os.environ,
        "DATABASE_URL": stack.app_url,
        "MIGRATIONS_DATABASE_URL": stack.admin_url,
        "NATS_URL": stack.nats.url,
        # A given NATS_URL comes with its users' passwords (NATS_<USER>_PASSWORD): the session's server.
        **stack.nats.password_env(),
        # A second whole suite beside the session's, on the same Postgres (100 connections): small pools
        # (tests/deploy/test_connection_budget.py adds them up).
        "DATABASE_POOL_SIZE": str(MAKE_DEV_POOL_SIZE),
        **env_extra,
    }
    env.pop("APP_ENV", None)  # as a newcomer's shell: make dev's own default (dev)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    deadline = time.monotonic() + 90
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if "Press Ctrl-C to stop." in line or time.monotonic() > deadline:
                break
        text = "".join(output)
        assert "suite is running" in text, text
        base = f"http://127.0.0.1:{env_extra['GATEWAY_PORT']}"
        login = httpx.post(
            f"{base}/v1/auth/login",
            json={"email": env_extra["DEV_OWNER_EMAIL"], "password": env_extra["DEV_OWNER_PASSWORD"]},
            timeout=10,
        )
        assert login.status_code == 200, login.text
        profile = httpx.get(
            f"{base}/v1/admin/profile", auth=("admin", "Demo-admin-basic-password-1"), timeout=10
        )
        assert profile.status_code == 200, profile.text
        assert profile.json()["org_id"] == login.json()["org_id"]
        _console_signs_in(f"http://127.0.0.1:{env_extra['WEB_PORT']}", env_extra, text)
        if then is not None:
            then(base, env)
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        output.append(rest or "")
    return proc.returncode, "".join(output)


def _console_signs_in(web: str, env_extra: dict[str, str], said: str) -> None:
    """The console make dev prints takes the demo owner's sign-in, as a browser would post it."""
    assert f"console:  {web}/console" in said, said
    with httpx.Client(base_url=web, timeout=10) as browser:
        form = browser.get("/console/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert form.status_code == 200 and token, form.text
        signed = browser.post(
            "/console/sign-in",
            data={
                "csrf": token.group(1),
                "email": env_extra["DEV_OWNER_EMAIL"],
                "password": env_extra["DEV_OWNER_PASSWORD"],
            },
            headers={"Sec-Fetch-Site": "same-origin"},
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/console", signed.text
        assert browser.get("/console").status_code == 200


def _pay_an_invoice_by_card(base: str, env: dict[str, str]) -> None:
    """docs/billing.md's walk-through: with no STRIPE_SECRET_KEY, make dev's local Stripe takes the
    payment and its webhook reaches the gateway; then seed 004's invoices-queue line."""
    login = httpx.post(
        f"{base}/v1/auth/login",
        json={"email": env["DEV_OWNER_EMAIL"], "password": env["DEV_OWNER_PASSWORD"]},
        timeout=10,
    )
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    line = {"description": "Deep clean", "quantity": "3", "unit_price_cents": 4500, "tax_rate": "13"}
    body = {"client_name": "Ada Client", "client_email": "ada@example.com", "items": [line]}
    invoice = httpx.post(f"{base}/v1/admin/invoices", json=body, headers=auth, timeout=10).json()
    issued = httpx.post(f"{base}/v1/admin/invoices/{invoice['id']}/issue", headers=auth, timeout=10)
    assert issued.status_code == 200, issued.text
    link = httpx.post(f"{base}/v1/admin/invoices/{invoice['id']}/checkout", headers=auth, timeout=15)
    assert link.status_code == 200, link.text
    paid = httpx.post(link.json()["checkout_url"], timeout=15)
    assert paid.status_code in (200, 303), paid.text
    wait_until(
        lambda: (
            httpx.get(f"{base}/v1/admin/invoices/{invoice['id']}", headers=auth, timeout=10).json()["status"]
            == "PAID"
        ),
        timeout=30,
        what="the invoice to be paid through the local Stripe's webhook",
    )
    queue = httpx.get(f"{base}/v1/admin/queue/invoices?status=all&limit=1", auth=BASIC, timeout=10)
    assert queue.status_code == 200 and isinstance(queue.json()["items"], list), queue.text
    # Seed 004's photos-queue smoke line: a 200 JSON array (empty here).
    photos = httpx.get(f"{base}/v1/admin/queue/photos?status=pending&limit=1", auth=BASIC, timeout=10)
    assert photos.status_code == 200 and photos.json() == [], photos.text


def _second_shell(command: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`command` in bash as a newcomer's second shell runs it beside make dev: in the checkout, with the
    venv first on PATH (as `. .venv/bin/activate` puts it), and none of make dev's settings (no
    APP_ENV, DATABASE_URL or keys): what it needs it finds in .run/dev.env."""
    shell_env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/root"),
        **env,
    }
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=ROOT,
        env=shell_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def readme_bash_blocks() -> list[str]:
    """The README's ```bash blocks, in order."""
    return re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL)


def curl_comments(blocks: list[str]) -> list[str]:
    """The trailing comment of each curl command in `blocks`, in order ("" where none): "200, your org
    only", '"active"' ..."""
    comments = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            if "curl " in command:
                comment = re.search(r"\s#\s*(.*)$", command)
                comments.append(comment.group(1) if comment else "")
    return comments


def _a_booking(base: str) -> str:
    """What the README's $BOOKING stands for: a lead from the public form, booked by the demo owner."""
    lead = httpx.post(
        f"{base}/v1/leads",
        json={
            "name": "Readme Lead",
            "phone": "780-555-0000",
            "email": "readme-lead@example.com",
            "postal_code": "T5J0N3",
            "structured_inputs": {"beds": 1, "baths": 1, "cleaning_type": "standard"},
        },
        timeout=10,
    )
    assert lead.status_code == 201, lead.text
    login = httpx.post(
        f"{base}/v1/auth/login",
        json={"email": DEFAULT_OWNER_EMAIL, "password": DEFAULT_OWNER_PASSWORD},
        timeout=10,
    )
    starts_at = time.strftime("%Y-%m-%dT16:00:00Z", time.gmtime(time.time() + 7 * 86400))
    booking = httpx.post(
        f"{base}/v1/admin/bookings",
        json={"lead_id": lead.json()["lead_id"], "starts_at": starts_at, "duration_minutes": 180},
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        timeout=10,
    )
    assert booking.status_code == 201, booking.text
    return str(booking.json()["id"])


def _readme_and_a_second_shell(base: str, env: dict[str, str]) -> None:
    """Every ```bash block of the README, as written, against this make dev (API and jq, and a booking
    for $BOOKING): each curl answers 2xx and what its comment says ("# 202", '# "active"'). Then
    docs/auth.md's create-org line from a second shell, and .run/dev.env owner-only meanwhile."""
    blocks = readme_bash_blocks()
    assert len(blocks) >= 3, "the README's tour has lost its ```bash blocks"
    # Each curl also writes its status to stderr, in order, so each can be held to its comment.
    script = "curl() { command curl -w '%{stderr}status=%{http_code}\\n' \"$@\"; }\n" + "\n".join(blocks)
    # In a folder of its own: the tour's export writes accounting-2026-11.csv where it runs.
    with tempfile.TemporaryDirectory() as folder:
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=folder,
            env={
                "PATH": os.environ["PATH"],
                "HOME": os.environ.get("HOME", "/root"),
                "API": base,
                "BOOKING": _a_booking(base),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        exported = (Path(folder) / "accounting-2026-11.csv").exists()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert exported, "the tour's accounting export wrote no file"
    statuses = re.findall(r"^status=(\d{3})$", ran.stderr, re.MULTILINE)
    comments = curl_comments(blocks)
    assert len(statuses) == len(comments), (statuses, comments, ran.stderr)
    for status, comment in zip(statuses, comments, strict=True):
        assert status.startswith("2"), (status, comment, ran.stdout)
        code = re.match(r"\d{3}", comment)
        assert code is None or status == code.group(), (status, comment)
        quoted = re.match(r'"[^"]*"', comment)
        assert quoted is None or quoted.group() in ran.stdout, (comment, ran.stdout)

    assert stat.S_IMODE(DEV_ENV_FILE.stat().st_mode) == 0o600
    line = re.search(
        r"`(OWNER_PASSWORD=\.\.\. python -m services\.iam\.manage create-org [^`]+)`",
        (ROOT / "docs" / "auth.md").read_text(),
    )
    assert line, "docs/auth.md's create-org example has moved"
    created = _second_shell(line.group(1).replace("OWNER_PASSWORD=...", "OWNER_PASSWORD=A-long-password-1"))
    assert created.returncode == 0, created.stdout + created.stderr
    assert "using .run/dev.env and .run/keys/iam.env from make dev" in created.stderr, created.stderr
    assert created.stdout.startswith("org_id="), created.stdout
    # The Development section's `make migrate`, beside make dev: its database, already at head.
    migrated = _second_shell("make migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "using .run/dev.env from make dev" in migrated.stderr, migrated.stderr
    done = re.search(r"migrated: (.+)", migrated.stderr)
    assert done and {"iam", "booking", "notify"} <= set(done.group(1).split(", ")), migrated.stderr


SEED_004_JOB_LINE = (
    "python -m services.jobs.run --job outbox-delivery --job storage-janitor --job email-dlq --once"
)


def _seed_004_jobs_steps(base: str, env: dict[str, str]) -> None:
    """Seed 004 "Jobs / Scheduler", step by step, with the seed's credentials and expectations."""
    cleanup = httpx.post(f"{base}/v1/admin/cleanup", auth=BASIC, timeout=10)
    assert cleanup.status_code == 202 and isinstance(cleanup.json()["deleted"], int), cleanup.text
    scan = httpx.post(f"{base}/v1/admin/email-scan", auth=BASIC, timeout=10)
    assert scan.status_code == 202, scan.text
    assert {"scanned", "enqueued"} <= set(scan.json()), scan.text
    retention = httpx.post(f"{base}/v1/admin/retention/cleanup", auth=BASIC, timeout=10)
    assert retention.status_code == 200 and isinstance(retention.json()["deleted"], int), retention.text
    for path in ("/v1/admin/export-dead-letter?limit=1", "/v1/admin/outbox/dead-letter?limit=1"):
        listed = httpx.get(f"{base}{path}", auth=BASIC, timeout=10)
        assert listed.status_code == 200 and isinstance(listed.json(), list), (path, listed.text)

    # The background loop step, "where the API environment variables are available": a second shell
    # beside make dev, as a newcomer opens it (make dev's settings come from .run/dev.env).
    once = _second_shell(SEED_004_JOB_LINE)
    assert once.returncode == 0, once.stdout + once.stderr
    assert "using .run/dev.env and .run/keys/jobs.env from make dev" in once.stderr, once.stderr
    assert "job_complete" in once.stdout + once.stderr

    # The rest of seed 004's checks from that shell: its curl lines need $API_BASE and the Basic Auth
    # pairs, which .run/dev.env holds; smoke.sh runs them (Health, Smoke tests, Jobs) and says GO.
    smoke = _second_shell("set -a; . .run/dev.env; set +a; deploy/scripts/smoke.sh")
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert smoke.stdout.strip().splitlines()[-1] == "GO", smoke.stdout
    assert "SKIP" not in smoke.stdout, smoke.stdout  # every check ran: dev has every pair it needs

    # Heartbeat: the scheduler started by make dev (JOBS_ENABLED=true) keeps /readyz's jobs check green.
    wait_until(
        lambda: httpx.get(f"{base}/readyz", timeout=10).json()["jobs"].get("ok"),
        timeout=30,
        what="the jobs check of /readyz to turn green",
    )
    ready = httpx.get(f"{base}/readyz", timeout=10)
    jobs = ready.json()["jobs"]
    assert ready.status_code == 200, ready.text
    assert jobs["ok"] is True and jobs["enabled"] is True, jobs
    assert jobs["age_seconds"] < 180, jobs
    status = httpx.get(f"{base}/v1/admin/jobs/status", auth=BASIC, timeout=10)
    assert status.status_code == 200, status.text
    by_name = {job["name"]: job for job in status.json()["jobs"]}
    assert by_name["outbox-delivery"]["last_success_at"], by_name["outbox-delivery"]
    # email-dlq is scheduled and shows in the operator's view. Not "it succeeded since": it runs per org
    # over every org of this shared test database (hundreds, ~30 s), the --once run above is skipped
    # while make dev's scheduler holds the job's lock, and other tests' runners record failures here.
    email_dlq = by_name["email-dlq"]
    assert email_dlq["interval_seconds"] == 600 and email_dlq["last_started_at"], email_dlq


def _first_run(base: str, env: dict[str, str]) -> None:
    _pay_an_invoice_by_card(base, env)
    _seed_004_jobs_steps(base, env)


# Both runs, and the two make dev tests there were (twice in a row; seed 004's jobs steps with the
# scheduler on), in one test: each make dev start costs about 20 s of the suite's CPU. Its own timeout:
# two make dev starts and seed 004's steps together take longer than one test's default 120 s.
@pytest.mark.timeout(300)
def test_make_dev_runs_twice_with_jobs_then_the_readme_and_stops_cleanly(stack):
    """The first run with the scheduler on (JOBS_ENABLED=true, as seed 004 has it): an invoice paid by
    card, then seed 004's "Jobs / Scheduler" steps; the second, as the README's tour runs it."""
    # The README's demo owner, as the README's tour signs in (this session's database is new).
    for run in range(2):
        ports = _free_ports()
        jobs_on = (
            {"JOBS_ENABLED": "true", "JOB_HEARTBEAT_REQUIRED": "true", "JOB_LOOP_SECONDS": "1"}
            if run == 0
            else {}
        )
        code, output = _run_dev(
            stack,
            {
                **ports,
                "DEV_OWNER_EMAIL": DEFAULT_OWNER_EMAIL,
                "DEV_OWNER_PASSWORD": DEFAULT_OWNER_PASSWORD,
                "DEFAULT_ORG_ID": "",
                **jobs_on,
            },
            then=_first_run if run == 0 else _readme_and_a_second_shell,
        )
        assert code == 0, output
        assert "stopping..." in output
        assert not DEV_ENV_FILE.exists(), "make dev left .run/dev.env behind"
        for port in ports.values():
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                raise AssertionError(f"port {port} still answers after Ctrl-C")
            except httpx.TransportError:
                pass


@pytest.mark.parametrize("app_env", [None, "dev", "test", "prod"])
def test_a_second_shell_reads_make_devs_settings_only_in_dev(tmp_path, monkeypatch, capsys, app_env):
    """A process never reads a dev file in production (or in tests); beside make dev, what the
    environment gives wins over the file, and the process's own key file is read for it alone."""
    run_dir = tmp_path / ".run"
    (run_dir / "keys").mkdir(parents=True)
    (run_dir / "dev.env").write_text(
        "# written by make dev\nDATABASE_URL=postgresql://cws_app@127.0.0.1:6543/cws\nNATS_URL=nats://file\n"
    )
    (run_dir / "keys" / "jobs.env").write_text("INTERNAL_SIGNING_KEY=c2VjcmV0=\n")
    for name in ("DATABASE_URL", "INTERNAL_SIGNING_KEY", "APP_ENV"):
        monkeypatch.setenv(name, "")  # so that monkeypatch puts back what was there
        monkeypatch.delenv(name)
    if app_env is not None:
        monkeypatch.setenv("APP_ENV", app_env)
    monkeypatch.setenv("NATS_URL", "nats://mine")

    used = use_dev_env("jobs", run_dir=run_dir)

    said = capsys.readouterr().err
    if app_env in (None, "dev"):
        assert used and "using .run/dev.env and .run/keys/jobs.env from make dev" in said, said
        assert os.environ["DATABASE_URL"] == "postgresql://cws_app@127.0.0.1:6543/cws"
        assert os.environ["INTERNAL_SIGNING_KEY"] == "c2VjcmV0="
    else:
        assert not used and said == ""
        assert "DATABASE_URL" not in os.environ and "INTERNAL_SIGNING_KEY" not in os.environ
    assert os.environ["NATS_URL"] == "nats://mine"


def _dev_refuses(**env: str) -> str:
    """make dev with `env` on free ports and nothing else of ours: it must exit 1 at once, with one
    sentence and no traceback. Returns the sentence."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tools.dev"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **_free_ports(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "postgres: embedded" not in done.stdout, "make dev started Postgres before refusing"
    assert time.monotonic() - started < 20
    return done.stderr.strip()


def test_make_dev_start_up_mistakes_are_one_sentence():
    said = _dev_refuses(DEV_OWNER_EMAIL="boss@acme.test")
    assert said.startswith("make dev: DEV_OWNER_EMAIL:") and "special-use or reserved" in said, said

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        said = _dev_refuses(GATEWAY_PORT=str(port))
    assert said.startswith(f"make dev: port {port} (GATEWAY_PORT) is already in use"), said

    nobody = free_port()
    said = _dev_refuses(DATABASE_URL=f"postgresql://cws_app@127.0.0.1:{nobody}/cws")
    assert said.startswith(f"make dev: cannot use Postgres at cws_app@127.0.0.1:{nobody}/cws:"), said


def test_dev_env_reads_the_same_in_python_and_in_a_shell(tmp_path):
    """.run/dev.env is read by use_dev_env and sourced by a shell (`set -a; . .run/dev.env`): a value
    with spaces, quotes, `$` or JSON must come out the same both ways."""
    values = {
        "PLAIN": "postgresql://cws_app@127.0.0.1:5432/cws",
        "TRICKY": 'pass word $HOME "q" it\'s',
        "JSON": '["https://a.example", "https://b.example"]',
    }
    path = tmp_path / "dev.env"
    _write_dev_env({**values, "UNSET": ""}, "postgresql://cws_owner@127.0.0.1/cws", path)  # empty: left out
    assert read_env_file(path) == {
        **values,
        "MIGRATIONS_DATABASE_URL": "postgresql://cws_owner@127.0.0.1/cws",
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    script = f"set -a; . {shlex.quote(str(path))}; set +a; " + "; ".join(
        f'printf "%s\\0" "${k}"' for k in values
    )
    shell = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert shell.stdout.split("\0")[:-1] == list(values.values())
