"""A local Stripe for the tests and `make dev`: localstripe (PyPI) for what it implements, behind a
small front of ours for what it lacks, so the `stripe` library needs one api base: the front's.

    LocalStripe(log_dir).start()   # two processes, each on a free port, logging to log_dir
    StripeApi(key, local.api_base, ...)
    local.configure_webhook("http://127.0.0.1:8000/webhooks/stripe", "whsec_...")

localstripe (`python -m localstripe --from-scratch`) keeps customers, payment intents, refunds and
events in memory, and signs and POSTs its own events (payment_intent.succeeded, ...) to the webhooks
configured at `POST /_config/webhooks/{id}` (form fields url, secret, events[]).

The front (`python -m tools.stripe_local checkout --upstream URL --port N`) adds:
- `POST /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}`, `POST .../{id}/expire`, for
  mode=payment with price_data line items; sessions live in the front's memory;
- `GET /pay/{id}`, the page a session's url points at, and `POST /pay/{id}`, which plays the
  customer paying: a PaymentIntent created and confirmed in localstripe with the session's amount,
  currency, customer and payment_intent_data.metadata (`?outcome=fail` uses a card localstripe
  declines, so it emits payment_intent.payment_failed), then, when paid, the session completed and
  `checkout.session.completed` signed exactly as Stripe signs and POSTed to the webhooks;
- idempotency keys, which localstripe ignores: a POST repeating an `Idempotency-Key` gets the first
  answer again (with the same parameters) or an idempotency_error (with others), as Stripe does;
- `POST /_config/webhooks/{id}`: kept for the front's own events and passed on to localstripe.
Every other request is passed to localstripe unchanged (method, path, query, body, Authorization).

It is run as processes rather than threads so a test can SIGKILL it and `make dev` can leave it up.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import html
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import ClientSession, ClientTimeout, web

from tools.devstack import free_port
from tools.processes import Proc

# The cards localstripe knows (localstripe/resources.py, PaymentMethod._try_get_canonical_test_article).
# pm_card_visa_chargeDeclined (4000000000000002) is only declined when attached to a customer, not
# when charged; 4000000000000341 is the one localstripe declines at charge time.
CARD_PAYS = "pm_card_visa"
CARD_DECLINED = "pm_card_chargeCustomerFail"
# Webhook deliveries of the front's own events: attempts after these pauses, then given up.
DELIVERY_BACKOFF = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class _Proc(Proc):
    probe: str = ""

    @property
    def probe_url(self) -> str:
        return self.probe


@dataclass
class LocalStripe:
    """localstripe and our Checkout front as two processes; `api_base` is the front's URL."""

    log_dir: Path
    port: int = 0
    front_port: int = 0
    _procs: list[Proc] = field(default_factory=list, init=False)

    @property
    def upstream(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.front_port}"

    def start(self, timeout: float = 30) -> LocalStripe:
        self.port = self.port or free_port()
        self.front_port = self.front_port or free_port()
        localstripe = _Proc(
            name="localstripe",
            # --from-scratch: never load the store an earlier run left in /tmp/localstripe.pickle.
            args=["-m", "localstripe", "--port", str(self.port), "--from-scratch"],
            env={},
            log_path=self.log_dir / "localstripe.log",
            probe=f"{self.upstream}/js.stripe.com/v3/",  # the one path that needs no API key
        )
        front = _Proc(
            name="stripe-front",
            args=[
                "-m",
                "tools.stripe_local",
                "checkout",
                "--upstream",
                self.upstream,
                "--port",
                str(self.front_port),
            ],
            env={},
            log_path=self.log_dir / "stripe-front.log",
            probe=f"{self.api_base}/_front/healthz",
        )
        try:
            for proc in (localstripe, front):
                self._procs.append(proc.start())
                proc.wait_ready(timeout)
        except BaseException:
            self.stop()  # the caller gets no LocalStripe to stop
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()

    def configure_webhook(
        self, url: str, secret: str, events: list[str] | None = None, webhook_id: str = "default"
    ) -> None:
        """Send every event (or only `events`) of both localstripe and the front to `url`, signed
        with `secret`. Calling it again with the same `webhook_id` replaces that webhook."""
        form: dict[str, str | list[str]] = {"url": url, "secret": secret}
        if events:
            form["events[]"] = events
        response = httpx.post(f"{self.api_base}/_config/webhooks/{webhook_id}", data=form, timeout=10)
        response.raise_for_status()


# --- the front ---------------------------------------------------------------------------------


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header: t=<unix time>,v1=<HMAC-SHA256 of "<t>.<payload>" keyed by secret>."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def unflatten(form: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`, `a[]=v`) as nested dicts and lists."""
    data: dict[str, Any] = {}
    for key, value in form:
        head, *rest = re.findall(r"[^\[\]]+|\[\]", key)
        parts = [head, *rest]
        node = data
        for part, following in itertools.pairwise(parts):
            node = node.setdefault(part, [] if following == "[]" else {})
        if isinstance(node, list):
            node.append(value)
        else:
            node[parts[-1]] = value

    def listify(value: Any) -> Any:
        if isinstance(value, dict):
            if value and all(k.isdigit() for k in value):
                return [listify(value[k]) for k in sorted(value, key=int)]
            return {k: listify(v) for k, v in value.items()}
        return value

    return {k: listify(v) for k, v in data.items()}


def stripe_error(
    status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
) -> web.Response:
    error: dict[str, Any] = {"type": kind, "message": message}
    if param:
        error["param"] = param
    return web.json_response({"error": error}, status=status)


@dataclass
class _Webhook:
    url: str
    secret: str
    events: list[str] | None


@dataclass
class _Replay:
    fingerprint: str
    status: int
    body: bytes
    content_type: str


@dataclass
class Front:
    upstream: str
    public_url: str
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per session: what only the pay page needs (the API key it was made with, the description).
    private: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks: dict[str, _Webhook] = field(default_factory=dict)
    replays: dict[tuple[str, str], _Replay] = field(default_factory=dict)
    key_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    http: ClientSession | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.idempotency])
        app.router.add_get("/_front/healthz", lambda _: self._ok())
        app.router.add_post("/_config/webhooks/{id}", self.config_webhook)
        app.router.add_post("/v1/checkout/sessions", self.create_session)
        app.router.add_get("/v1/checkout/sessions/{id}", self.get_session)
        app.router.add_post("/v1/checkout/sessions/{id}/expire", self.expire_session)
        app.router.add_get("/pay/{id}", self.pay_page)
        app.router.add_post("/pay/{id}", self.pay)
        app.router.add_route("*", "/{tail:.*}", self.proxy)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _ok(self) -> web.Response:
        return web.Response(text="ok")

    async def _open(self, _: web.Application) -> None:
        self.http = ClientSession(timeout=ClientTimeout(total=30))

    async def _close(self, _: web.Application) -> None:
        if self.http is not None:
            await self.http.close()

    # Stripe keeps the first answer to a POST with an Idempotency-Key and gives it again; localstripe
    # does not, so the front does it for every POST, its own and localstripe's alike.
    @web.middleware
    async def idempotency(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key:
            return await handler(request)
        slot = (request.headers.get("Authorization", ""), key)
        fingerprint = hashlib.sha256(request.path_qs.encode() + b"\n" + await request.read()).hexdigest()
        async with self.key_locks.setdefault(slot, asyncio.Lock()):
            kept = self.replays.get(slot)
            if kept is not None:
                if kept.fingerprint != fingerprint:
                    return stripe_error(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        "first used with.",
                        kind="idempotency_error",
                    )
                return web.Response(
                    body=kept.body,
                    status=kept.status,
                    content_type=kept.content_type,
                    headers={"Idempotent-Replayed": "true", "Idempotency-Key": key},
                )
            response = await handler(request)
            # Stripe replays 4xx as well as 2xx; a 5xx may be retried for real.
            if (
                isinstance(response, web.Response)
                and response.status < 500
                and isinstance(response.body, bytes)
            ):
                self.replays[slot] = _Replay(
                    fingerprint, response.status, response.body, response.content_type
                )
            return response

    async def config_webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        form = unflatten((await request.post()).items())
        events = form.get("events")
        if not form.get("url") or not form.get("secret"):
            return stripe_error(400, "url and secret are required")
        self.webhooks[request.match_info["id"]] = _Webhook(
            form["url"], form["secret"], list(events) if isinstance(events, list) else None
        )
        return await self._forward(request, raw)

    async def create_session(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth:
            return stripe_error(401, "You did not provide an API key.")
        form = unflatten((await request.post()).items())
        if form.get("mode") != "payment":
            return stripe_error(400, "Only mode=payment is supported by the local Stripe", "mode")
        items = form.get("line_items")
        if not isinstance(items, list) or not items:
            return stripe_error(400, "line_items is required", "line_items")
        amount = 0
        currency = form.get("currency")
        names = []
        for number, item in enumerate(items):
            price = item.get("price_data") if isinstance(item, dict) else None
            if not isinstance(price, dict) or not str(price.get("unit_amount", "")).isdigit():
                return stripe_error(
                    400, "Only price_data line items with unit_amount are supported", f"line_items[{number}]"
                )
            amount += int(price["unit_amount"]) * int(item.get("quantity", 1))
            currency = price.get("currency") or currency
            names.append(str(price.get("product_data", {}).get("name", "")))
        if not currency:
            return stripe_error(
                400, "Missing required param: currency.", "line_items[0][price_data][currency]"
            )
        if not form.get("success_url"):
            return stripe_error(400, "Missing required param: success_url.", "success_url")
        customer = form.get("customer")
        if customer:
            assert self.http is not None
            async with self.http.get(
                f"{self.upstream}/v1/customers/{customer}", headers={"Authorization": auth}
            ) as found:
                if found.status != 200:
                    return stripe_error(400, f"No such customer: '{customer}'", "customer")
        session_id = "cs_test_" + secrets.token_urlsafe(24).replace("-", "a").replace("_", "b")
        now = int(time.time())
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "amount_subtotal": amount,
            "amount_total": amount,
            "currency": currency.lower(),
            "customer": customer or None,
            "client_reference_id": form.get("client_reference_id"),
            "metadata": form.get("metadata") or {},
            "payment_intent": None,
            "payment_method_types": ["card"],
            "success_url": form["success_url"],
            "cancel_url": form.get("cancel_url"),
            "url": f"{self.public_url}/pay/{session_id}",
            "created": now,
            "expires_at": now + 24 * 3600,
            "livemode": False,
        }
        self.sessions[session_id] = session
        pi_data = form.get("payment_intent_data") or {}
        self.private[session_id] = {
            "auth": auth,
            "description": ", ".join(filter(None, names)),
            "pi_metadata": pi_data.get("metadata") or {},
        }
        return web.json_response(session)

    async def get_session(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None or not request.headers.get("Authorization"):
            return stripe_error(404, f"No such checkout.session: '{request.match_info['id']}'", "session")
        return web.json_response(session)

    async def expire_session(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return stripe_error(404, f"No such checkout.session: '{request.match_info['id']}'", "session")
        if session["status"] != "open":
            return stripe_error(400, "Only open sessions can be expired.")
        session["status"] = "expired"
        self._emit("checkout.session.expired", session)
        return web.json_response(session)

    async def pay_page(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            raise web.HTTPNotFound(text="no such checkout session")
        amount = f"{session['amount_total'] / 100:.2f} {session['currency'].upper()}"
        what = html.escape(self.private[session["id"]]["description"] or "payment")
        sid = html.escape(session["id"])
        page = (
            f"<!doctype html><title>Local Stripe Checkout</title><h1>{what}</h1><p>{html.escape(amount)}</p>"
            f"<p>Status: {html.escape(session['status'])} / {html.escape(session['payment_status'])}</p>"
            f'<form method="post" action="/pay/{sid}"><button>Pay with 4242 4242 4242 4242</button></form>'
            f'<form method="post" action="/pay/{sid}?outcome=fail"><button>Pay with a declined card</button></form>'
        )
        if session.get("cancel_url"):
            page += f'<p><a href="{html.escape(session["cancel_url"])}">Cancel</a></p>'
        return web.Response(text=page, content_type="text/html")

    async def pay(self, request: web.Request) -> web.Response:
        """The customer pays: 303 to success_url when paid, 402 when the card is declined."""
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            raise web.HTTPNotFound(text="no such checkout session")
        if session["status"] != "open":
            raise web.HTTPConflict(text=f"checkout session is {session['status']}")
        private = self.private[session["id"]]
        fails = request.query.get("outcome") == "fail"
        form: dict[str, str] = {
            "amount": str(session["amount_total"]),
            "currency": session["currency"],
            "payment_method": CARD_DECLINED if fails else CARD_PAYS,
        }
        if session["customer"]:
            form["customer"] = session["customer"]
        form.update({f"metadata[{k}]": str(v) for k, v in private["pi_metadata"].items()})
        assert self.http is not None
        headers = {"Authorization": private["auth"]}
        # Created, then confirmed: a declined confirm answers 402 without the intent's id.
        async with self.http.post(f"{self.upstream}/v1/payment_intents", data=form, headers=headers) as made:
            if made.status != 200:
                raise web.HTTPBadGateway(text=f"localstripe refused the payment intent: {await made.text()}")
            intent_id = (await made.json())["id"]
        session["payment_intent"] = intent_id
        async with self.http.post(
            f"{self.upstream}/v1/payment_intents/{intent_id}/confirm", headers=headers
        ) as done:
            if done.status == 402:
                return web.Response(status=402, text="Your card was declined.", content_type="text/html")
            if done.status != 200:
                raise web.HTTPBadGateway(text=f"localstripe failed to confirm: {await done.text()}")
        session.update(status="complete", payment_status="paid")
        self._emit("checkout.session.completed", session)
        raise web.HTTPSeeOther(session["success_url"])

    def _emit(self, event_type: str, obj: dict[str, Any]) -> None:
        event = {
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "api_version": "2017-08-15",  # localstripe's, so every event says the same
            "created": int(time.time()),
            "type": event_type,
            "data": {"object": dict(obj)},
            "livemode": False,
            "pending_webhooks": len(self.webhooks),
            "request": {"id": None, "idempotency_key": None},
        }
        payload = json.dumps(event, indent=2, sort_keys=True).encode()
        for hook in self.webhooks.values():
            if hook.events is None or event_type in hook.events:
                task = asyncio.create_task(self._deliver(hook, payload, event_type))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _deliver(self, hook: _Webhook, payload: bytes, event_type: str) -> None:
        """Like Stripe, retried until a 2xx (but for seconds, not days); signed afresh each attempt."""
        assert self.http is not None
        for pause in DELIVERY_BACKOFF:
            await asyncio.sleep(pause)
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": sign(payload, hook.secret),
            }
            try:
                async with self.http.post(hook.url, data=payload, headers=headers) as answer:
                    print(f"webhook {event_type} -> {hook.url}: {answer.status}", flush=True)
                    if 200 <= answer.status < 300:
                        return
            except (aiohttp.ClientError, TimeoutError) as error:
                print(f"webhook {event_type} -> {hook.url}: {error!r}", flush=True)
        print(f"webhook {event_type} -> {hook.url}: given up", flush=True)

    async def proxy(self, request: web.Request) -> web.Response:
        return await self._forward(request, await request.read())

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        assert self.http is not None
        async with self.http.request(
            request.method, f"{self.upstream}{request.path_qs}", data=body, headers=headers
        ) as answer:
            return web.Response(
                body=await answer.read(),
                status=answer.status,
                content_type=answer.content_type,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The local Stripe's Checkout front (see the module docstring)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    checkout = commands.add_parser("checkout", help="serve the front in front of a running localstripe")
    checkout.add_argument("--upstream", required=True, help="localstripe's URL")
    checkout.add_argument("--port", type=int, required=True)
    checkout.add_argument(
        "--public-url", help="the URL session pages are linked at (default: 127.0.0.1:PORT)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # aiohttp's access log
    front = Front(
        upstream=args.upstream.rstrip("/"), public_url=args.public_url or f"http://127.0.0.1:{args.port}"
    )
    web.run_app(front.app(), host="127.0.0.1", port=args.port, print=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
