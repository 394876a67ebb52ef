"""Billing's only door to Stripe: customers (created, and deleted when a person is erased), Checkout
Sessions, refunds, and verifying the webhooks Stripe signs. Everything else in billing talks to
`StripeApi`, never to the `stripe` library.

Why a door of our own:
- every call goes through the "stripe" circuit breaker, so an outage at Stripe turns into a quick
  `StripeUnavailable` (a gRPC UNAVAILABLE carrying retry-after) instead of requests piling up
  behind timeouts; a refusal of one request (a 4xx) is `StripeRefused` and says nothing about
  Stripe's health, so it never opens the breaker;
- every creating call takes an idempotency key, which Stripe uses to answer a retried request with
  the object it already made: a retry after a timeout never charges, refunds or creates twice;
- it uses the library's async methods over an httpx client, so the event loop is never blocked.

Tests point `api_base` at tools/stripe_local.py (localstripe plus our Checkout front), which
replaces Stripe at its network boundary only.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe

from libs.common.circuit import CircuitBreaker
from libs.common.errors import FailedPrecondition, Unavailable

T = TypeVar("T")


class StripeUnavailable(Unavailable):
    """Stripe could not be reached, timed out, failed (5xx) or throttled us (429), or the breaker is
    open: try again after `retry_after_seconds`."""

    default_code = "stripe_unavailable"

    def __init__(self, retry_after_seconds: int, detail: str = "the payment provider is unavailable") -> None:
        super().__init__(detail, retry_after_seconds=retry_after_seconds)


class StripeRefused(FailedPrecondition):
    """Stripe answered and refused this one request (a declined card, a missing object, a bad
    parameter); `code` is Stripe's error code when it gave one."""

    default_code = "stripe_refused"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message, code=code or self.default_code)


class WebhookRejected(Exception):
    """A webhook that must not be processed; `reason` says why (for the log, not the sender)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str


@dataclass(frozen=True)
class Refund:
    id: str
    status: str
    amount_cents: int


class StripeApi:
    def __init__(
        self,
        secret_key: str,
        api_base: str | None,
        breaker: CircuitBreaker,
        timeout: float = 10.0,
        *,
        network_retries: int = 1,
    ) -> None:
        """`api_base` None means Stripe itself. `network_retries` retries a connection error once,
        with the same idempotency key, so a blip costs no failure on the breaker."""
        self._breaker = breaker
        self._http = stripe.HTTPXClient(timeout=timeout)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=self._http,
            max_network_retries=network_retries,
        )

    async def aclose(self) -> None:
        await self._http.close_async()

    async def create_customer(
        self, email: str, name: str, metadata: dict[str, str], idempotency_key: str
    ) -> str:
        """The new customer's id (cus_...)."""
        customer = await self._call(
            "create a customer",
            lambda: self._client.v1.customers.create_async(
                {"email": email, "name": name, "metadata": metadata},
                {"idempotency_key": idempotency_key},
            ),
        )
        return str(customer.id)

    async def delete_customer(self, customer_id: str) -> bool:
        """Delete a customer (a person's data erased, issue 13): True when Stripe deleted it, False when
        Stripe has no such customer (already deleted: the erasure's goal holds either way)."""

        async def delete() -> bool:
            try:
                await self._client.v1.customers.delete_async(customer_id)
            except stripe.InvalidRequestError as error:
                if error.http_status == 404:
                    return False  # an answer, not an outage: _call counts it as Stripe being healthy
                raise
            return True

        return await self._call("delete a customer", delete)

    async def create_checkout_session(
        self,
        *,
        amount_cents: int,
        currency: str,
        description: str,
        customer_id: str,
        metadata: dict[str, str],
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> CheckoutSession:
        """A one-off payment page for `amount_cents`. The metadata goes on the session and on its
        payment intent, so checkout.session.* and payment_intent.* events both carry it back."""
        params: dict[str, Any] = {
            "mode": "payment",
            "customer": customer_id,
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": currency.lower(),  # Stripe wants lower case ISO codes
                        "unit_amount": amount_cents,
                        "product_data": {"name": description},
                    },
                }
            ],
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        session = await self._call(
            "create a checkout session",
            lambda: self._client.v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]  # a plain dict of the TypedDict's shape
                {"idempotency_key": idempotency_key},
            ),
        )
        return CheckoutSession(id=str(session.id), url=str(session.url))

    async def create_refund(
        self,
        *,
        payment_intent_id: str,
        amount_cents: int | None,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> Refund:
        """Refund `amount_cents` of a paid intent (None: all that is left of it)."""
        params: dict[str, Any] = {"payment_intent": payment_intent_id, "metadata": metadata}
        if amount_cents is not None:
            params["amount"] = amount_cents
        refund = await self._call(
            "create a refund",
            lambda: self._client.v1.refunds.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            ),
        )
        return Refund(id=str(refund.id), status=str(refund.status), amount_cents=int(refund.amount))

    def construct_event(
        self, payload: bytes, signature_header: str, secret: str, tolerance: int = 300
    ) -> dict[str, Any]:
        """The event of a webhook body whose Stripe-Signature matches `secret` and is at most
        `tolerance` seconds old; else WebhookRejected. Local work only: never touches the breaker.

        The library checks the signature (`WebhookSignature.verify_header`, what `construct_event`
        does first); the body is then read with `json.loads` rather than built into the library's
        object tree, which cost 25 times as much per webhook and was turned back into a dict anyway."""
        return verify_webhook(payload, signature_header, secret, tolerance)

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        if not self._breaker.allow():
            raise StripeUnavailable(
                self._retry_after(), f"the payment provider is unavailable; did not {what}"
            )
        try:
            result = await call()
        except stripe.StripeError as error:
            status = error.http_status
            if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError) or (
                status is None or status >= 500 or status == 429
            ):
                self._breaker.record_failure()
                raise StripeUnavailable(
                    self._retry_after(), f"the payment provider is unavailable; could not {what}"
                ) from error
            # Stripe answered: healthy, even though it said no to this request.
            self._breaker.record_success()
            raise StripeRefused(
                error.user_message or f"the payment provider refused to {what}", error.code
            ) from error
        except (Exception, asyncio.CancelledError):
            # Our own fault or a cancelled call: nothing learnt about Stripe, but free a half-open trial.
            self._breaker.record_neutral()
            raise
        self._breaker.record_success()
        return result

    def _retry_after(self) -> int:
        return max(1, math.ceil(self._breaker.retry_after()))


def verify_webhook(
    payload: bytes, signature_header: str, secret: str, tolerance: int = 300
) -> dict[str, Any]:
    """See StripeApi.construct_event; needs no client (and so no API key)."""
    try:
        stripe.WebhookSignature.verify_header(payload, signature_header, secret, tolerance)
    except stripe.SignatureVerificationError as error:
        # The library checks the signature first, then the age; its messages tell them apart.
        if str(error.user_message or "").startswith("Timestamp outside the tolerance"):
            raise WebhookRejected(f"timestamp outside the tolerance of {tolerance}s") from None
        raise WebhookRejected(f"signature does not match ({error.user_message})") from None
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("body is not JSON (or not a JSON object)") from None
    try:
        event = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("body is not JSON (or not a JSON object)") from None
    if not isinstance(event, dict):
        raise WebhookRejected("body is not JSON (or not a JSON object)")
    return event
