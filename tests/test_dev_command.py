"""`make dev` (python -m tools.dev) as a newcomer runs it: against given DATABASE_URL / NATS_URL,
twice in a row, with the printed login line working, an invoice paid by card through its local Stripe
(docs/billing.md's walk-through) and Ctrl-C stopping everything; and seed 004's "Jobs / Scheduler"
steps, unchanged, against `make dev` with JOBS_ENABLED=true."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx

from tools.dev import SERVICES
from tools.devstack import ROOT, free_port
from tools.processes import DEV_KEYRING, wait_until

BASIC = ("admin", "Demo-admin-basic-password-1")


def _free_ports() -> dict[str, str]:
    # Every port on a free one, so a developer's own `make dev` may run beside the tests.
    ports = {"GATEWAY_PORT": str(free_port())}
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
        # make dev makes fresh keys per run unless given; the jobs one is given so the test can sign as jobs.
        "JOBS_INTERNAL_SIGNING_KEY": DEV_KEYRING.private["jobs"],
        # A second whole suite beside the session's, on the same Postgres (100 connections): small pools.
        "DATABASE_POOL_SIZE": "4",
        **env_extra,
    }
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
        if then is not None:
            then(base, env)
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        output.append(rest or "")
    return proc.returncode, "".join(output)


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


def test_make_dev_runs_twice_and_stops_cleanly(stack):
    email = f"dev-owner-{uuid.uuid4().hex[:8]}@example.com"
    for run in range(2):
        ports = _free_ports()
        code, output = _run_dev(
            stack,
            {
                **ports,
                "DEV_OWNER_EMAIL": email,
                "DEV_OWNER_PASSWORD": "Dev-owner-password-42",
                "DEFAULT_ORG_ID": "",
            },
            then=_pay_an_invoice_by_card if run == 0 else None,
        )
        assert code == 0, output
        assert "stopping..." in output
        for port in ports.values():
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                raise AssertionError(f"port {port} still answers after Ctrl-C")
            except httpx.TransportError:
                pass


SEED_004_JOBS = ("--job", "outbox-delivery", "--job", "storage-janitor", "--job", "email-dlq")


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

    # The background loop step, "where the API environment variables are available".
    run_env = {
        **env,
        "APP_ENV": "dev",
        # The jobs key make dev was given (JOBS_INTERNAL_SIGNING_KEY): the command signs as jobs.
        "INTERNAL_SIGNING_KEY": DEV_KEYRING.private["jobs"],
        **{
            f"{name.upper()}_GRPC_TARGET": f"127.0.0.1:{env[name.upper() + '_GRPC_PORT']}"
            for name in SERVICES
        },
    }
    once = subprocess.run(
        [sys.executable, "-m", "services.jobs.run", *SEED_004_JOBS, "--once"],
        cwd=ROOT,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert once.returncode == 0, once.stdout + once.stderr
    assert "job_complete" in once.stdout + once.stderr

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


def test_seed_004_jobs_steps_pass_against_make_dev_with_jobs_enabled(stack):
    email = f"dev-jobs-{uuid.uuid4().hex[:8]}@example.com"
    code, output = _run_dev(
        stack,
        {
            **_free_ports(),
            "DEV_OWNER_EMAIL": email,
            "DEV_OWNER_PASSWORD": "Dev-owner-password-42",
            "DEFAULT_ORG_ID": "",
            "JOBS_ENABLED": "true",
            "JOB_HEARTBEAT_REQUIRED": "true",
            "JOB_LOOP_SECONDS": "1",
        },
        then=_seed_004_jobs_steps,
    )
    assert code == 0, output
