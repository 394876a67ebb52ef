"""StripeApi against a real local Stripe (tools/stripe_local.py: localstripe plus our Checkout front),
replaced at the network boundary only: customers and their idempotency keys, Checkout Sessions paid
and declined, the webhooks that follow (signed as Stripe signs them) and what construct_event makes
of them, refunds, and the circuit breaker against a port where nothing listens."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.common.circuit import CircuitBreaker, State
from libs.common.errors import FailedPrecondition, Unavailable
from services.billing.stripe_api import StripeApi, StripeRefused, StripeUnavailable, WebhookRejected
from tools.devstack import free_port
from tools.stripe_local import LocalStripe, sign
from tools.testkit import eventually

# stripe's own HTTPXClient posts its form body as `data=<str>`, which httpx deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

KEY = "sk_test_local_billing"
SECRET = "whsec_test_billing"


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A webhook endpoint that keeps every POST, answering 200."""

    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/stripe"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.deliveries.append(Delivery(body, dict(self.headers.items())))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    async def event(self, event_type: str, object_id: str, timeout: float = 15) -> Delivery:
        """The delivery of `event_type` about the object `object_id`, once it has come."""

        def find() -> Delivery | None:
            with self.lock:
                for delivery in self.deliveries:
                    event = delivery.event
                    if event["type"] == event_type and event["data"]["object"]["id"] == object_id:
                        return delivery
            return None

        return await eventually(find, timeout=timeout, message=f"{event_type} for {object_id}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def local_stripe(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[LocalStripe]:
    local = LocalStripe(Path(tmp_path_factory.mktemp("stripe"))).start()
    local.configure_webhook(receiver.url, SECRET)
    yield local
    local.stop()


@pytest.fixture
async def api(local_stripe: LocalStripe) -> AsyncIterator[StripeApi]:
    stripe_api = StripeApi(KEY, local_stripe.api_base, CircuitBreaker("stripe"), timeout=10)
    yield stripe_api
    await stripe_api.aclose()


def key() -> str:
    return str(uuid.uuid4())


def checkout_args(customer: str, amount_cents: int = 2500) -> dict[str, Any]:
    return {
        "amount_cents": amount_cents,
        "currency": "CAD",
        "description": "Invoice 2026-0001",
        "customer_id": customer,
        "metadata": {"org_id": "org-1", "invoice_id": str(uuid.uuid4())},
        "success_url": "https://app.example.com/paid",
        "cancel_url": "https://app.example.com/cancelled",
        "idempotency_key": key(),
    }


async def new_session(api: StripeApi, amount_cents: int = 2500) -> tuple[str, str, dict[str, str]]:
    """A customer and an open checkout session for them: (customer id, session id, metadata)."""
    customer = await api.create_customer("pat@example.com", "Pat Client", {"org_id": "org-1"}, key())
    args = checkout_args(customer, amount_cents)
    session = await api.create_checkout_session(**args)
    return customer, session.id, args["metadata"]


async def session_of(local: LocalStripe, session_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=local.api_base, auth=(KEY, "")) as http:
        response = await http.get(f"/v1/checkout/sessions/{session_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def pay(local: LocalStripe, session_id: str, outcome: str = "") -> httpx.Response:
    params = {"outcome": outcome} if outcome else {}
    async with httpx.AsyncClient(base_url=local.api_base) as http:
        return await http.post(f"/pay/{session_id}", params=params)


async def test_customer_created_once_per_idempotency_key(api: StripeApi) -> None:
    once = key()
    first = await api.create_customer("ana@example.com", "Ana", {"org_id": "org-1"}, once)
    again = await api.create_customer("ana@example.com", "Ana", {"org_id": "org-1"}, once)
    other = await api.create_customer("ana@example.com", "Ana", {"org_id": "org-1"}, key())
    assert first.startswith("cus_")
    assert again == first
    assert other != first
    # The same key with other parameters is Stripe's idempotency_error: a refusal, not an outage.
    with pytest.raises(StripeRefused):
        await api.create_customer("bo@example.com", "Bo", {"org_id": "org-1"}, once)


async def test_checkout_session_carries_amount_currency_and_metadata(
    api: StripeApi, local_stripe: LocalStripe
) -> None:
    customer = await api.create_customer("pat@example.com", "Pat Client", {"org_id": "org-1"}, key())
    args = checkout_args(customer, amount_cents=4321)
    created = await api.create_checkout_session(**args)
    assert await api.create_checkout_session(**args) == created  # the same key: the same session
    session_id, metadata = created.id, args["metadata"]
    assert session_id.startswith("cs_test_")
    session = await session_of(local_stripe, session_id)
    assert session["url"] == f"{local_stripe.api_base}/pay/{session_id}"
    assert (session["amount_total"], session["currency"]) == (4321, "cad")
    assert (session["status"], session["payment_status"]) == ("open", "unpaid")
    assert session["metadata"] == metadata
    assert session["customer"] == customer
    async with httpx.AsyncClient() as http:
        page = await http.get(session["url"])
    assert page.status_code == 200 and "Invoice 2026-0001" in page.text


async def test_paying_delivers_signed_events_that_construct_event_checks(
    api: StripeApi, local_stripe: LocalStripe, receiver: Receiver
) -> None:
    _, session_id, metadata = await new_session(api)
    paid = await pay(local_stripe, session_id)
    assert paid.status_code == 303 and paid.headers["location"] == "https://app.example.com/paid"

    completed = await receiver.event("checkout.session.completed", session_id)
    header = completed.headers["Stripe-Signature"]
    event = api.construct_event(completed.body, header, SECRET)
    session = event["data"]["object"]
    assert (session["status"], session["payment_status"]) == ("complete", "paid")
    assert session["metadata"] == metadata and session["amount_total"] == 2500
    intent_id = session["payment_intent"]
    assert intent_id.startswith("pi_")

    with pytest.raises(WebhookRejected, match="signature does not match"):
        api.construct_event(completed.body, header, "whsec_someone_else")
    stale = sign(completed.body, SECRET, int(time.time()) - 1000)
    with pytest.raises(WebhookRejected, match="timestamp outside the tolerance"):
        api.construct_event(completed.body, stale, SECRET)
    garbage = b"<html>not json</html>"
    with pytest.raises(WebhookRejected, match="body is not JSON"):
        api.construct_event(garbage, sign(garbage, SECRET), SECRET)

    # localstripe's own event for the intent comes to the same URL, signed with the same secret,
    # and carries the metadata given as payment_intent_data.
    succeeded = await receiver.event("payment_intent.succeeded", intent_id)
    intent = api.construct_event(succeeded.body, succeeded.headers["Stripe-Signature"], SECRET)["data"][
        "object"
    ]
    assert intent["metadata"] == metadata
    assert (intent["amount"], intent["currency"], intent["status"]) == (2500, "cad", "succeeded")


async def test_declined_payment_leaves_the_session_open_and_reports_the_failure(
    api: StripeApi, local_stripe: LocalStripe, receiver: Receiver
) -> None:
    _, session_id, metadata = await new_session(api)
    declined = await pay(local_stripe, session_id, outcome="fail")
    assert declined.status_code == 402
    session = await session_of(local_stripe, session_id)
    assert (session["status"], session["payment_status"]) == ("open", "unpaid")
    failed = await receiver.event("payment_intent.payment_failed", session["payment_intent"])
    intent = api.construct_event(failed.body, failed.headers["Stripe-Signature"], SECRET)["data"]["object"]
    assert intent["metadata"] == metadata
    assert intent["last_payment_error"]["code"] == "card_declined"


async def test_refunds_full_and_partial(api: StripeApi, local_stripe: LocalStripe) -> None:
    intents = []
    for _ in range(2):
        _, session_id, _ = await new_session(api, amount_cents=2500)
        assert (await pay(local_stripe, session_id)).status_code == 303
        intents.append((await session_of(local_stripe, session_id))["payment_intent"])

    once = key()
    partial = await api.create_refund(
        payment_intent_id=intents[0], amount_cents=1000, metadata={"refund_id": "r-1"}, idempotency_key=once
    )
    assert partial.id.startswith("re_") and (partial.status, partial.amount_cents) == ("succeeded", 1000)
    again = await api.create_refund(
        payment_intent_id=intents[0], amount_cents=1000, metadata={"refund_id": "r-1"}, idempotency_key=once
    )
    assert again == partial

    full = await api.create_refund(
        payment_intent_id=intents[1], amount_cents=None, metadata={"refund_id": "r-2"}, idempotency_key=key()
    )
    assert (full.status, full.amount_cents) == ("succeeded", 2500)


async def test_breaker_opens_on_network_failures_and_closes_after_a_success(
    local_stripe: LocalStripe,
) -> None:
    breaker = CircuitBreaker("stripe", failure_threshold=2, reset_seconds=0.5)
    nowhere = StripeApi(KEY, f"http://127.0.0.1:{free_port()}", breaker, timeout=2, network_retries=0)
    live = StripeApi(KEY, local_stripe.api_base, breaker, timeout=10)
    try:
        for _ in range(2):
            with pytest.raises(StripeUnavailable) as failed:
                await nowhere.create_customer("x@example.com", "X", {}, key())
            assert failed.value.__cause__ is not None  # a call was made, and failed
        assert breaker.state is State.OPEN

        with pytest.raises(StripeUnavailable) as refused:
            await nowhere.create_customer("x@example.com", "X", {}, key())
        # Refused by the open breaker itself: no connection error behind it.
        assert refused.value.__cause__ is None
        assert isinstance(refused.value, Unavailable) and refused.value.retry_after_seconds == 1
        assert breaker.state is State.OPEN

        await eventually(lambda: breaker.state is State.HALF_OPEN, timeout=5, message="breaker half-open")
        assert (await live.create_customer("x@example.com", "X", {}, key())).startswith("cus_")
        assert breaker.state is State.CLOSED
    finally:
        await nowhere.aclose()
        await live.aclose()


async def test_a_refusal_leaves_the_breaker_closed(local_stripe: LocalStripe) -> None:
    breaker = CircuitBreaker("stripe", failure_threshold=1, reset_seconds=30)
    api = StripeApi(KEY, local_stripe.api_base, breaker, timeout=10)
    try:
        with pytest.raises(StripeRefused) as refused:
            await api.create_refund(
                payment_intent_id="pi_does_not_exist", amount_cents=100, metadata={}, idempotency_key=key()
            )
        assert isinstance(refused.value, FailedPrecondition)
        assert breaker.state is State.CLOSED
    finally:
        await api.aclose()
