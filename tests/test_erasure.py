"""Seed 002's data export/delete playbook end to end (issue 13): a person with a lead, two bookings, an
invoice paid by card through Stripe, photos in an S3 server, emails sent and a client portal session
is exported, then erased while billing is down for the first cleanup run. The second run finishes the
request; the export endpoint then finds nothing, SQL over every column of every schema finds none of
their values, and the accounting totals are what they were.

The test runs its own media (S3 backend on moto's server), billing and jobs processes and a gateway in
front of them, beside the session's iam, booking and notify, so it can stop its billing without
disturbing other tests."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import psycopg
import pytest
from moto.server import ThreadedMotoServer

from conftest import Gateways, Stack, billing_env, jobs_env, media_env
from gateway.tests.test_photo_routes import jpeg_bytes, upload
from services.booking.tests.portal import session_of
from tools.devstack import free_port, port_open
from tools.processes import GatewayProc, ServiceProc, gateway_proc, service_proc, wait_until
from tools.smtp_sink import SmtpSink
from tools.stripe_local import LocalStripe
from tools.testkit import assert_problem, bearer, eventually, owner

BUCKET = "cws-erasure-test"
S3_KEY, S3_SECRET = "erasure-access", "erasure-secret"
SCHEMAS = ("iam", "booking", "billing", "media", "notify", "jobs")
TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb")


class Suite:
    """The module's own media (S3), billing, jobs and gateway."""

    def __init__(self, s3: str, media: ServiceProc, billing: ServiceProc, jobs: ServiceProc, gw: GatewayProc):
        self.s3, self.media, self.billing, self.jobs, self.gateway = s3, media, billing, jobs, gw

    def objects(self, prefix: str) -> list[str]:
        client = boto3.client(
            "s3",
            endpoint_url=self.s3,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
        )
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for item in listed.get("Contents", [])]


@pytest.fixture(scope="module")
def suite(
    stack: Stack,
    iam: ServiceProc,
    booking: ServiceProc,
    notify: ServiceProc,
    local_stripe: LocalStripe,
    gateways: Gateways,
    gateway: GatewayProc,  # the session's: local Stripe sends its webhooks there (same database)
) -> Iterator[Suite]:
    port = free_port()
    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3_server.start()
    wait_until(lambda: port_open("127.0.0.1", port), what="moto S3 server")
    s3 = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=s3,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    ).create_bucket(Bucket=BUCKET)
    logs = stack.work_dir / "logs"
    media_s3 = {
        **media_env(stack, booking, notify),
        "ORDER_STORAGE_BACKEND": "r2",
        "R2_BUCKET": BUCKET,
        "R2_ACCESS_KEY": S3_KEY,
        "R2_SECRET_KEY": S3_SECRET,
        "R2_ENDPOINT": s3,
        "R2_REGION": "us-east-1",
    }
    media = service_proc("media", media_s3, logs, label="media-erasure").start().wait_ready()
    billing = service_proc(
        "billing",
        billing_env(stack, iam, booking, notify, local_stripe, media),
        logs,
        label="billing-erasure",
    )
    billing.start().wait_ready()
    jobs_vars = {**jobs_env(stack, iam, booking, notify, billing, media), "JOBS_ENABLED": "false"}
    jobs = service_proc("jobs", jobs_vars, logs, label="jobs-erasure").start().wait_ready()
    gw_env = {
        **gateways.base_env(),
        "BILLING_GRPC_TARGET": billing.target,
        "MEDIA_GRPC_TARGET": media.target,
        "JOBS_GRPC_TARGET": jobs.target,
    }
    gw = gateway_proc(gw_env, logs, label="gateway-erasure").start().wait_ready()
    try:
        yield Suite(s3, media, billing, jobs, gw)
    finally:
        for proc in (gw, jobs, billing, media):
            proc.stop()
        s3_server.stop()


def pii_hits(admin_url: str, values: list[str]) -> list[str]:
    """Every (schema.table.column) in the suite's schemas holding one of `values`: text and JSON
    columns by a case-insensitive match, binary columns (event payloads) by their UTF-8 bytes."""
    hits: list[str] = []
    with psycopg.connect(admin_url, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT c.table_schema, c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.table_schema = ANY(%s) AND t.table_type = 'BASE TABLE' "
            "AND (c.data_type = ANY(%s) OR c.data_type = 'bytea' OR c.data_type = 'ARRAY')",
            (list(SCHEMAS), list(TEXT_TYPES)),
        ).fetchall()
        for schema, table, column, data_type in columns:
            for value in values:
                if data_type == "bytea":
                    where = f"position(convert_to(%s, 'UTF8') IN \"{column}\") > 0"
                    param: Any = value
                else:
                    where = f'"{column}"::text ILIKE %s'
                    param = f"%{value}%"
                found = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}" WHERE {where}', (param,))
                count = found.fetchone()[0]  # type: ignore[index]
                if count:
                    hits.append(f"{schema}.{table}.{column} has {value!r} ({count} rows)")
    return hits


def accounting(admin_url: str, org_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        invoices = conn.execute(
            "SELECT number, status, currency, subtotal_cents, taxable_subtotal_cents, tax_cents, tax_rate_basis,"
            " total_cents, issued_at FROM billing.invoices WHERE org_id = %s ORDER BY number",
            (org_id,),
        ).fetchall()
        payments = conn.execute(
            "SELECT provider, method, amount_cents, currency, status, provider_ref FROM billing.invoice_payments "
            "WHERE org_id = %s ORDER BY amount_cents",
            (org_id,),
        ).fetchall()
        items = conn.execute(
            "SELECT quantity, unit_price_cents, tax_rate, amount_cents FROM billing.invoice_items "
            "WHERE org_id = %s ORDER BY amount_cents",
            (org_id,),
        ).fetchall()
    return [*invoices, *payments, *items]


async def test_a_person_is_exported_then_erased_with_billing_down_for_the_first_run(
    suite: Suite, stack: Stack, make_org: Any, smtp_sink: SmtpSink, http: httpx.AsyncClient
) -> None:
    url = suite.gateway.url
    org = await make_org(name="Erasure Cleaning Co")
    headers = await owner(http, url, org)
    tag = uuid.uuid4().hex[:8]
    email = f"Erin.Erase-{tag}@Example.com"
    name, phone, address = (
        f"Erin Eraseme {tag}",
        f"780-555-{int(tag[:4], 16) % 10000:04d}",
        f"{tag} Forget Street",
    )

    # --- the person's data across every service -------------------------------------------------
    lead = await http.post(
        f"{url}/v1/leads",
        headers={"X-Test-Org": org.org_id},
        json={
            "name": name,
            "phone": phone,
            "email": email,
            "postal_code": "T5J0N3",
            "notes": f"Call {name} before noon",
            "structured_inputs": {"beds": 2, "baths": 1, "cleaning_type": "standard"},
        },
    )
    assert lead.status_code == 201, lead.text
    lead_id = lead.json()["lead_id"]
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    first = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={
            "lead_id": lead_id,
            "starts_at": starts.isoformat(),
            "duration_minutes": 120,
            "address": address,
        },
    )
    assert first.status_code == 201, first.text
    second = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={
            "starts_at": (starts + timedelta(days=7)).isoformat(),
            "duration_minutes": 90,
            "client_name": name,
            "client_email": email.lower(),
            "client_phone": phone,
            "address": address,
            "cleaning_type": "standard",
            "beds": 2,
            "baths": 1,
        },
    )
    assert second.status_code == 201, second.text
    booking_ids = [first.json()["id"], second.json()["id"]]

    # Confirmed (the confirmation email is sent), worked and completed: billing drafts its invoice.
    for action in ("confirm", "start", "complete"):
        done = await http.post(f"{url}/v1/admin/bookings/{booking_ids[0]}/{action}", headers=headers)
        assert done.status_code == 200, done.text
    confirmed = await http.post(f"{url}/v1/admin/bookings/{booking_ids[1]}/confirm", headers=headers)
    assert confirmed.status_code == 200, confirmed.text

    for booking_id in (booking_ids[0], booking_ids[0], booking_ids[1]):
        uploaded = await upload(http, url, headers, booking_id, jpeg_bytes())
        assert uploaded.status_code == 201, uploaded.text
    prefix = f"orders/{org.org_id}/"
    assert len(suite.objects(prefix)) == 3

    async def drafted() -> dict[str, Any]:
        found = await http.get(f"{url}/v1/admin/invoices", headers=headers, params={"status": "DRAFT"})
        [invoice] = found.json()["items"]
        return dict(invoice)

    invoice = await eventually(drafted, timeout=20)
    invoice_id = invoice["id"]
    assert (
        await http.post(f"{url}/v1/admin/invoices/{invoice_id}/issue", headers=headers)
    ).status_code == 200
    sent = await http.post(f"{url}/v1/admin/invoices/{invoice_id}/send", headers=headers)
    assert sent.status_code == 200, sent.text
    link = await http.post(f"{url}/v1/admin/invoices/{invoice_id}/checkout", headers=headers)
    assert link.status_code == 200, link.text
    assert (await http.post(link.json()["checkout_url"], follow_redirects=False)).status_code == 303

    async def paid() -> bool:
        found = await http.get(f"{url}/v1/admin/invoices/{invoice_id}", headers=headers)
        return bool(found.json()["status"] == "PAID")

    await eventually(paid, timeout=20)

    # The emails went out: two confirmations and the invoice (with its public link).
    mails = await smtp_sink.delivered(email.lower(), count=3, timeout=20)
    invoice_mail = next(m for m in mails if "/v1/public/invoices/" in m.text)
    token = re.search(r"/v1/public/invoices/([A-Za-z0-9_-]{43})", invoice_mail.text).group(1)  # type: ignore[union-attr]
    assert (await http.get(f"{url}/v1/public/invoices/{token}")).status_code == 200

    # A client portal session, opened from the emailed magic link.
    asked = await http.post(
        f"{url}/client/login/request", json={"email": email.lower()}, headers={"X-Test-Org": org.org_id}
    )
    assert asked.status_code == 202, asked.text
    login_mails = await smtp_sink.delivered(email.lower(), count=4, timeout=20)
    magic = next(m for m in login_mails if "/client/login/callback?token=" in m.text)
    callback = re.search(r"(/client/login/callback\?token=[A-Za-z0-9_.\-]+)", magic.text).group(1)  # type: ignore[union-attr]
    portal_token = await session_of(http, url, "client", callback)
    mine = await http.get(f"{url}/v1/client/portal/bookings", headers=bearer(portal_token))
    assert mine.status_code == 200, mine.text

    before = accounting(stack.admin_url, org.org_id)
    gst_params = {
        "from": (datetime.now(UTC) - timedelta(days=1)).date().isoformat(),
        "to": (datetime.now(UTC) + timedelta(days=1)).date().isoformat(),
    }
    gst_before = await http.get(f"{url}/v1/admin/finance/reports/gst", headers=headers, params=gst_params)
    assert gst_before.status_code == 200, gst_before.text

    # --- the export: everything, metadata only ----------------------------------------------------
    exported = await http.post(f"{url}/v1/admin/data/export", headers=headers, json={"email": email})
    assert exported.status_code == 200, exported.text
    bundle = exported.json()
    assert [item["id"] for item in bundle["leads"]] == [lead_id]
    assert sorted(item["id"] for item in bundle["bookings"]) == sorted(booking_ids)
    assert [item["id"] for item in bundle["invoices"]] == [invoice_id]
    assert [(p["provider"], p["status"]) for p in bundle["payments"]] == [("stripe", "succeeded")]
    assert len(bundle["photos"]) == 3 and len(bundle["emails"]) >= 3
    flat = exported.text
    assert token not in flat and portal_token not in flat and "checkout_url" not in flat
    assert "storage_key" not in flat and "X-Amz-Signature" not in flat

    # --- the deletion request, twice ----------------------------------------------------------------
    requested = await http.post(
        f"{url}/v1/admin/data-deletion/requests", headers=headers, json={"email": email}
    )
    assert requested.status_code == 202, requested.text
    request = requested.json()
    assert (request["status"], request["matched_leads"], request["created"]) == ("pending", 1, True)
    again = await http.post(
        f"{url}/v1/admin/data-deletion/requests", headers=headers, json={"email": email.lower()}
    )
    assert again.status_code in (200, 202), again.text
    assert (again.json()["id"], again.json()["created"]) == (request["id"], False)

    # --- the first cleanup run, with billing down -------------------------------------------------
    suite.billing.stop()
    try:
        run = await http.post(f"{url}/v1/admin/retention/cleanup", headers=headers)
        assert run.status_code == 200, run.text
        assert isinstance(run.json()["deleted"], int)
        assert run.json()["deletion_steps_failed"] >= 1
        shown = (
            await http.get(f"{url}/v1/admin/data-deletion/requests/{request['id']}", headers=headers)
        ).json()
        steps = {step["name"]: step for step in shown["steps"]}
        assert shown["status"] == "pending"
        assert steps["billing"]["done"] is False and steps["billing"]["last_error"], steps
        assert all(steps[name]["done"] for name in ("media", "notify", "iam")), steps
        assert steps["booking"]["done"] is False, "booking goes last, once every other step is done"
        # What was done is done: the photos are gone from the API and the portal session has ended.
        assert (await http.get(f"{url}/v1/admin/bookings/{booking_ids[0]}/photos", headers=headers)).json()[
            "items"
        ] == []
        ended = await http.get(f"{url}/v1/client/portal/bookings", headers=bearer(portal_token))
        assert ended.status_code == 401, ended.text
    finally:
        suite.billing.start()
        await suite.billing.wait_ready_async()

    # --- the second run finishes it -------------------------------------------------------------------
    run = await http.post(f"{url}/v1/admin/retention/cleanup", headers=headers)
    assert run.status_code == 200, run.text
    shown = (await http.get(f"{url}/v1/admin/data-deletion/requests/{request['id']}", headers=headers)).json()
    assert shown["status"] == "completed", shown
    assert all(step["done"] for step in shown["steps"]), shown["steps"]
    again_run = await http.post(f"{url}/v1/admin/retention/cleanup", headers=headers)
    assert again_run.status_code == 200 and again_run.json()["deletion_requests_processed"] == 0

    # The storage janitor (seed 004's job line, with this module's jobs settings) removes the objects.
    janitor = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.jobs.run", "--job", "storage-janitor", "--once"],
        env={**os.environ, **suite.jobs.env},
        capture_output=True,
        timeout=120,
    )
    assert janitor.returncode == 0, janitor.stderr.decode(errors="replace")[-2000:]
    assert suite.objects(prefix) == []

    # --- nothing of the person is left ----------------------------------------------------------------
    assert (await http.get(f"{url}/v1/public/invoices/{token}")).status_code == 404
    for body in ({"email": email}, {"email": email.lower()}):
        empty = await http.post(f"{url}/v1/admin/data/export", headers=headers, json=body)
        assert empty.status_code == 200, empty.text
        sections = {k: v for k, v in empty.json().items() if isinstance(v, list)}
        assert all(v == [] for v in sections.values()), sections
    by_lead = await http.post(f"{url}/v1/admin/data/export", headers=headers, json={"lead_id": lead_id})
    assert by_lead.status_code == 200, by_lead.text
    [anonymous] = by_lead.json()["leads"]
    assert by_lead.json()["bookings"] == [], "the bookings are detached from the lead"
    assert email.lower() not in by_lead.text.lower() and name.lower() not in by_lead.text.lower()
    assert anonymous["id"] == lead_id

    hits = pii_hits(stack.admin_url, [email, name, phone, address])
    assert hits == [], hits

    # Accounting is untouched: the invoice's snapshot, its payment and the GST report are as they were.
    assert accounting(stack.admin_url, org.org_id) == before
    gst_after = await http.get(f"{url}/v1/admin/finance/reports/gst", headers=headers, params=gst_params)
    assert gst_after.json() == gst_before.json()
    one = await http.get(f"{url}/v1/admin/invoices/{invoice_id}", headers=headers)
    assert (one.json()["status"], one.json()["client_email"]) == ("PAID", "")
    assert_problem(
        await http.get(f"{url}/v1/admin/data-deletion/requests/{uuid.uuid4()}", headers=headers), 404
    )
