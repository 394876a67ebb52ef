"""Routing a claimed row to the adapter that sends it, through that adapter's circuit breaker.

`Router.attempt` sends one row and says what happened (Sent, Skipped, Deferred or Failed); it
records nothing: outcomes.py turns each attempt into the row's new state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from libs.common.circuit import CircuitBreaker
from libs.common.logs import get_logger
from services.notify.adapters.base import Adapter, DeliveryFailure, Outbound, Send, TransientFailure
from services.notify.adapters.email_sendgrid import SendGridAdapter
from services.notify.adapters.email_smtp import SmtpAdapter
from services.notify.adapters.sheets import SheetsAdapter
from services.notify.adapters.webhook import WebhookAdapter
from services.notify.settings import NotifySettings

# Exports whose body is a whole document (services/notify/exports.py, mode accounting_csv): sent by
# webhook only, whatever EXPORT_MODE says by the time they are delivered.
WEBHOOK_ONLY_EXPORTS = frozenset({"accounting_csv"})

log = get_logger(__name__)

ADAPTERS: dict[str, Callable[[NotifySettings], Adapter]] = {
    "smtp": SmtpAdapter,
    "sendgrid": SendGridAdapter,
    "webhook": WebhookAdapter,
    "sheets": SheetsAdapter,
}


@dataclass(frozen=True)
class Sent:
    pass


@dataclass(frozen=True)
class Skipped:
    """Its kind is switched off (EMAIL_MODE=off, EXPORT_MODE=off)."""

    reason: str


@dataclass(frozen=True)
class Deferred:
    """Not attempted: the adapter's circuit is open. Due again in `wait_seconds`."""

    wait_seconds: float


@dataclass(frozen=True)
class Failed:
    failure: DeliveryFailure


Attempt = Sent | Skipped | Deferred | Failed


class Lane:
    """One delivery lane's senders: an adapter's is opened on first use and kept for the lane's life
    (an SMTP lane keeps one connection), closed with the lane's exit stack."""

    def __init__(self, stack: AsyncExitStack) -> None:
        self._stack = stack
        self._senders: dict[str, Send] = {}

    async def sender(self, adapter: Adapter) -> Send:
        if adapter.name not in self._senders:
            self._senders[adapter.name] = await self._stack.enter_async_context(adapter.lane())
        return self._senders[adapter.name]


class Router:
    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        # Created on first use, inside the running loop.
        self._adapters: dict[str, Adapter] = {}
        self.breakers: dict[str, CircuitBreaker] = {}

    def adapter_for(self, kind: str, payload: Mapping[str, Any] | None = None) -> Adapter | Skipped:
        if kind == "email":
            mode = self.settings.email_mode
            return Skipped("EMAIL_MODE=off") if mode == "off" else self._adapter(mode)
        if kind == "export" and (payload or {}).get("type") in WEBHOOK_ONLY_EXPORTS:
            # Queued as a webhook because EXPORT_MODE was webhook then (exports.py): a later switch to
            # off must not skip it (billing has recorded the month as exported: it would be lost), nor
            # hand a whole CSV to the sheets adapter. Without a URL now it fails and dead-letters, CSV
            # kept, replayable.
            return self._adapter("webhook")
        if kind == "export":
            mode = self.settings.export_mode
            if mode == "off":
                return Skipped("EXPORT_MODE=off")
            return self._adapter("sheets" if mode == "sheets" else "webhook")
        return self._adapter("webhook")

    def _adapter(self, name: str) -> Adapter:
        if name not in self._adapters:
            self._adapters[name] = ADAPTERS[name](self.settings)
        return self._adapters[name]

    def breaker(self, name: str) -> CircuitBreaker:
        if name not in self.breakers:
            self.breakers[name] = CircuitBreaker(
                name,
                failure_threshold=self.settings.circuit_failure_threshold,
                reset_seconds=self.settings.circuit_reset_seconds,
            )
        return self.breakers[name]

    async def attempt(self, row: Outbound, lane: Lane) -> Attempt:
        """Send one row through its adapter, unless its kind is off or the adapter's circuit is open."""
        adapter = self.adapter_for(row.kind, row.payload)
        if isinstance(adapter, Skipped):
            return adapter
        breaker = self.breaker(adapter.name)
        if not breaker.allow():
            return Deferred(max(breaker.retry_after(), min(1.0, breaker.reset_seconds)))
        try:
            send = await lane.sender(adapter)
            await send(row)
        except DeliveryFailure as failure:
            if not failure.reached_remote:
                breaker.record_neutral()
            elif failure.permanent:
                breaker.record_success()  # the remote answered; it refused this one message
            else:
                breaker.record_failure()
            return Failed(failure)
        except Exception as exc:  # an adapter bug must not leave the row stuck until the lease
            breaker.record_neutral()
            log.exception("adapter_failed", adapter=adapter.name, outbox_id=str(row.id))
            return Failed(TransientFailure(f"unexpected error: {type(exc).__name__}"))
        breaker.record_success()
        return Sent()

    async def close(self) -> None:
        for adapter in self._adapters.values():
            try:
                await adapter.close()
            except Exception as exc:  # closing is best effort at shutdown
                log.warning("adapter_close_failed", adapter=adapter.name, error=str(exc))
        self._adapters.clear()
