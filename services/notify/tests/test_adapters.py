"""The adapters on their own, in this process, against real local servers: an aiosmtpd SMTP server,
HTTP servers standing in for SendGrid and webhook receivers. What each remote answer means (sent,
retry later, refused for good) and the SSRF guard's decisions are checked here; the delivery engine
around them is tested through real notify processes in test_delivery.py."""

from __future__ import annotations

import base64
import secrets
import socket
import uuid
from typing import Any

import pytest
from standardwebhooks import Webhook

from services.notify.adapters.base import Outbound, PermanentFailure, TransientFailure, message_id
from services.notify.adapters.email_sendgrid import SendGridAdapter
from services.notify.adapters.email_smtp import SmtpAdapter
from services.notify.adapters.sheets import SheetsAdapter
from services.notify.adapters.webhook import Allowlist, WebhookAdapter, check_target
from services.notify.delivery.outcomes import backoff_seconds
from services.notify.delivery.routing import Router, Skipped
from services.notify.settings import NotifySettings
from services.notify.tests.own_notify import HttpRecorder, email_payload, mailbox
from tools.devstack import free_port
from tools.smtp_sink import SmtpSink

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def settings(**values: Any) -> NotifySettings:
    return NotifySettings(_env_file=None, email_from="bookings@cws.test", **values)  # type: ignore[call-arg]


def row(kind: str = "email", payload: dict[str, Any] | None = None, target: str = "") -> Outbound:
    return Outbound(uuid.uuid4(), uuid.uuid4(), kind, target, payload or {})


def loopback_addresses(host: str) -> set[str]:
    return {str(info[4][0]) for info in socket.getaddrinfo(host, 80, 0, socket.SOCK_STREAM)}


@pytest.fixture
def recorder() -> Any:
    server = HttpRecorder().start()
    yield server
    server.stop()


# --- the SSRF guard ----------------------------------------------------------------------------------


async def test_a_host_off_the_allowlist_is_refused_before_any_lookup() -> None:
    with pytest.raises(PermanentFailure) as refused:
        await check_target("https://hooks.example.net/x", Allowlist.parse(["example.com"]))
    assert str(refused.value) == "host hooks.example.net is not in EXPORT_WEBHOOK_ALLOWED_HOSTS"
    assert not refused.value.reached_remote


async def test_a_name_allowed_whose_address_is_loopback_is_refused_unless_the_address_is_listed() -> None:
    with pytest.raises(PermanentFailure) as refused:
        await check_target("http://localhost:8080/hook", Allowlist.parse(["localhost"]))
    assert "host localhost resolves to" in str(refused.value)
    assert "list the address in EXPORT_WEBHOOK_ALLOWED_HOSTS" in str(refused.value)

    # Listing the name and every address it resolves to (as addresses or CIDRs) lets it through.
    target = await check_target(
        "http://localhost:8080/hook?x=1", Allowlist.parse(["localhost", "127.0.0.0/8", "::1"])
    )
    assert {str(a) for a in target.addresses} == loopback_addresses("localhost")
    assert target.host_header == "localhost:8080" and target.path == "/hook?x=1"


async def test_a_listed_address_or_range_is_allowed_and_an_address_outside_it_is_not() -> None:
    target = await check_target("http://127.0.0.1:9/", Allowlist.parse(["127.0.0.1"]))
    assert [str(a) for a in target.addresses] == ["127.0.0.1"]
    assert target.url_for(target.addresses[0]) == "http://127.0.0.1:9/"

    inside = await check_target("http://10.1.2.3/", Allowlist.parse(["10.0.0.0/8"]))
    assert [str(a) for a in inside.addresses] == ["10.1.2.3"]
    for url in ("http://169.254.169.254/latest/meta-data", "http://10.1.2.3/", "http://[::1]/"):
        with pytest.raises(PermanentFailure, match="is not in EXPORT_WEBHOOK_ALLOWED_HOSTS"):
            await check_target(url, Allowlist.parse(["192.168.0.0/16"]))


async def test_an_ipv4_mapped_address_is_judged_as_the_ipv4_address_it_maps() -> None:
    # The host string is listed, but the address it stands for (127.0.0.1) is not.
    with pytest.raises(PermanentFailure) as refused:
        await check_target("http://[::ffff:127.0.0.1]/", Allowlist.parse(["::ffff:7f00:1"]))
    assert "resolves to 127.0.0.1" in str(refused.value)


async def test_a_public_address_on_the_allowlist_passes() -> None:
    target = await check_target("https://93.184.215.14/hook", Allowlist.parse(["93.184.215.14"]))
    assert target.host_header == "93.184.215.14" and target.scheme == "https"


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/x", "http:///nohost", "http://127.0.0.1:99999/x"],
)
async def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(PermanentFailure):
        await check_target(url, Allowlist.parse(["127.0.0.1"]))


# --- signed webhooks ---------------------------------------------------------------------------------


def webhooks(**values: Any) -> WebhookAdapter:
    return WebhookAdapter(
        settings(export_webhook_secret=SECRET, export_webhook_allowed_hosts="127.0.0.1", **values)
    )


async def test_a_webhook_is_signed_with_the_row_id_and_verifies(recorder: HttpRecorder) -> None:
    adapter = webhooks()
    outbound = row("webhook", {"url": f"{recorder.url}/hooks", "body": {"a": 1, "b": "ü"}})
    try:
        await adapter.send(outbound)
        await adapter.send(outbound)  # a retry of the same row
    finally:
        await adapter.close()
    first, second = recorder.at("/hooks")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(outbound.id)
    assert Webhook(SECRET).verify(first.body, first.headers) == {"a": 1, "b": "ü"}
    assert first.headers["host"] == f"127.0.0.1:{recorder.port}"


async def test_an_export_goes_to_the_export_webhook_url(recorder: HttpRecorder) -> None:
    adapter = webhooks(export_webhook_url=f"{recorder.url}/exports")
    payload = {"type": "lead.created", "data": {"lead_id": "42"}}
    try:
        await adapter.send(row("export", payload, target="127.0.0.1"))
    finally:
        await adapter.close()
    [request] = recorder.at("/exports")
    assert Webhook(SECRET).verify(request.body, request.headers) == payload


@pytest.mark.parametrize(
    ("status", "failure"),
    [(500, TransientFailure), (503, TransientFailure), (429, TransientFailure), (408, TransientFailure),
     (400, PermanentFailure), (404, PermanentFailure), (410, PermanentFailure)],
)  # fmt: skip
async def test_what_a_webhook_answer_means(recorder: HttpRecorder, status: int, failure: type) -> None:
    recorder.status = status
    adapter = webhooks()
    try:
        with pytest.raises(failure) as raised:
            await adapter.send(row("webhook", {"url": f"{recorder.url}/hooks", "body": {}}))
    finally:
        await adapter.close()
    assert str(status) in str(raised.value)


async def test_redirects_are_not_followed(recorder: HttpRecorder) -> None:
    recorder.status = 302
    adapter = webhooks()
    try:
        with pytest.raises(PermanentFailure, match="redirects are not followed"):
            await adapter.send(row("webhook", {"url": f"{recorder.url}/hooks", "body": {}}))
    finally:
        await adapter.close()
    assert [r.path for r in recorder.requests] == ["/hooks"]


async def test_an_unreachable_receiver_is_transient() -> None:
    adapter = webhooks()
    try:
        with pytest.raises(TransientFailure, match="unreachable"):
            await adapter.send(row("webhook", {"url": f"http://127.0.0.1:{free_port()}/", "body": {}}))
    finally:
        await adapter.close()


async def test_no_secret_means_no_webhook(recorder: HttpRecorder) -> None:
    adapter = WebhookAdapter(settings(export_webhook_allowed_hosts="127.0.0.1"))
    try:
        with pytest.raises(PermanentFailure, match="EXPORT_WEBHOOK_SECRET is not set"):
            await adapter.send(row("webhook", {"url": f"{recorder.url}/hooks", "body": {}}))
    finally:
        await adapter.close()
    assert recorder.requests == []


# --- SendGrid ----------------------------------------------------------------------------------------


def sendgrid(recorder: HttpRecorder) -> SendGridAdapter:
    return SendGridAdapter(settings(sendgrid_api_url=recorder.url, sendgrid_api_key="SG.key"))


async def test_sendgrid_accepts_with_202(recorder: HttpRecorder) -> None:
    recorder.status = 202
    adapter, to = sendgrid(recorder), mailbox()
    outbound = row("email", email_payload(to))
    try:
        await adapter.send(outbound)
    finally:
        await adapter.close()
    [request] = recorder.at("/v3/mail/send")
    assert request.headers["authorization"] == "Bearer SG.key"
    body = request.json()
    assert body["personalizations"] == [{"to": [{"email": to}]}]
    assert body["custom_args"] == {"outbox_id": str(outbound.id)}


@pytest.mark.parametrize(
    ("status", "failure"),
    [(400, PermanentFailure), (413, PermanentFailure), (429, TransientFailure), (408, TransientFailure),
     (401, TransientFailure), (500, TransientFailure), (502, TransientFailure)],
)  # fmt: skip
async def test_what_a_sendgrid_answer_means(recorder: HttpRecorder, status: int, failure: type) -> None:
    recorder.status = status
    adapter = sendgrid(recorder)
    try:
        with pytest.raises(failure, match=f"SendGrid {status}"):
            await adapter.send(row("email", email_payload(mailbox())))
    finally:
        await adapter.close()


async def test_sendgrid_unreachable_is_transient() -> None:
    adapter = SendGridAdapter(settings(sendgrid_api_url=f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(TransientFailure, match="SendGrid unreachable"):
            await adapter.send(row("email", email_payload(mailbox())))
    finally:
        await adapter.close()


# --- SMTP --------------------------------------------------------------------------------------------


@pytest.fixture
def sink() -> Any:
    server = SmtpSink().start()
    yield server
    server.stop()


def smtp(sink: SmtpSink) -> SmtpAdapter:
    return SmtpAdapter(settings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_timeout_seconds=5))


async def test_a_lane_sends_over_one_connection_and_hands_it_to_the_next_lane(sink: SmtpSink) -> None:
    adapter, to = smtp(sink), mailbox()
    try:
        async with adapter.lane() as send:
            await send(row("email", email_payload(to, from_name="Sparkle Co")))
            await send(row("email", email_payload(to)))
        async with adapter.lane() as send:
            await send(row("email", email_payload(to)))
    finally:
        await adapter.close()
    first, *_ = await sink.delivered(to, count=3)
    assert first.message["From"] == "Sparkle Co <bookings@cws.test>"
    assert first.message["Auto-Submitted"] == "auto-generated"


async def test_a_connection_the_server_dropped_is_replaced_without_failing_the_send(sink: SmtpSink) -> None:
    adapter, to = smtp(sink), mailbox()
    try:
        async with adapter.lane() as send:
            await send(row("email", email_payload(to)))
        sink.stop()  # drops the idle connection the adapter keeps
        sink.start()
        async with adapter.lane() as send:
            await send(row("email", email_payload(to)))
    finally:
        await adapter.close()
    await sink.delivered(to, count=2)


async def test_a_5xx_reply_is_a_bounce_and_a_4xx_reply_is_transient(sink: SmtpSink) -> None:
    adapter = smtp(sink)
    try:
        async with adapter.lane() as send:
            sink.refuse_with = "550 5.1.1 no such user"
            with pytest.raises(PermanentFailure) as bounced:
                await send(row("email", email_payload(mailbox())))
            assert bounced.value.bounced and "550" in str(bounced.value)
            sink.refuse_with = "451 4.3.0 try later"
            with pytest.raises(TransientFailure, match="451"):
                await send(row("email", email_payload(mailbox())))
            sink.refuse_with = ""
            to = mailbox()
            await send(row("email", email_payload(to)))  # the lane reconnected after the errors
    finally:
        await adapter.close()
    await sink.delivered(to)


async def test_no_smtp_server_is_transient() -> None:
    adapter = SmtpAdapter(settings(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_timeout_seconds=2))
    try:
        async with adapter.lane() as send:
            with pytest.raises(TransientFailure, match="cannot connect to SMTP"):
                await send(row("email", email_payload(mailbox())))
    finally:
        await adapter.close()


async def test_an_email_without_a_recipient_is_refused_before_connecting() -> None:
    adapter = SmtpAdapter(settings(smtp_host="127.0.0.1", smtp_port=free_port()))
    async with adapter.lane() as send:
        with pytest.raises(PermanentFailure, match="no valid recipient") as refused:
            await send(row("email", {"subject": "x", "text": "y"}))
    assert not refused.value.reached_remote


# --- pure parts --------------------------------------------------------------------------------------


def test_message_id_is_derived_from_the_row_and_the_sender_domain() -> None:
    outbox_id = uuid.uuid4()
    assert message_id(outbox_id, "bookings@cws.test") == f"<{outbox_id}@cws.test>"
    assert message_id(outbox_id, "bookings@cws.test") == message_id(outbox_id, "bookings@cws.test")


def test_backoff_doubles_with_equal_jitter_and_is_capped() -> None:
    config = settings(outbox_base_backoff_seconds=30, outbox_max_backoff_seconds=3600)
    assert backoff_seconds(1, config, rng=lambda: 0.0) == 15
    assert backoff_seconds(1, config, rng=lambda: 1.0) == 30
    assert backoff_seconds(3, config, rng=lambda: 0.0) == 60
    assert backoff_seconds(3, config, rng=lambda: 1.0) == 120
    assert backoff_seconds(20, config, rng=lambda: 1.0) == 3600
    assert backoff_seconds(1000, config, rng=lambda: 0.5) == 2700


@pytest.mark.parametrize("mode", ["webhook", "off", "sheets"])
def test_an_accounting_export_queued_as_a_webhook_stays_a_webhook_whatever_export_mode_became(
    mode: str,
) -> None:
    """Billing records the month as exported once notify queued it: a later EXPORT_MODE=off must not
    skip the row (the month would be lost) nor hand the whole CSV to the sheets adapter."""
    router = Router(
        settings(
            export_mode=mode,
            export_webhook_url="https://hooks.example.com/x",
            export_webhook_secret=SECRET,
            sheets_spreadsheet_id="sheet",
        )
    )
    accounting = router.adapter_for("export", {"type": "accounting_csv", "data": {}})
    assert isinstance(accounting, WebhookAdapter)
    lead = router.adapter_for("export", {"type": "lead_created", "data": {}})
    expected = {"webhook": WebhookAdapter, "sheets": SheetsAdapter, "off": Skipped}[mode]
    assert isinstance(lead, expected), lead
