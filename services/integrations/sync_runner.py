"""What SyncGoogleCalendar / SyncQuickBooks do for one org: decide whether a pass runs, run the
provider's pass (gcal.gcal_pass, qbo.qbo_pass), record its state, and map its failures.

In order: configured here? connected? (Google) a calendar chosen? due (GCAL/QBO_SYNC_INTERVAL_SECONDS
since the last pass, unless forced)? the provider's breaker closed? Each "no" is a skip with its
reason, nothing recorded. Then the grant (refreshed if it expires soon) and the pass.

Failures: RateLimited (beyond what the pass waits for itself) and ProviderUnavailable count against the
provider's breaker, are recorded as the pass's error with the cursor kept, and answer UNAVAILABLE so the
job run shows a failure. GrantRevoked (at the refresh, before or during the pass) marks the connection
revoked (grants.py tells the owners), is recorded, and is a skip "revoked". Anything else is recorded
and re-raised as it is.

One pass per org and provider at a time in this process (a "sync now" while the job runs waits, then
finds the pass not due); across processes the passes are idempotent by their id mappings."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy import select

from libs.common.circuit import CircuitBreaker
from libs.common.db import unit_of_work
from libs.common.errors import FailedPrecondition, ServiceError, Unavailable
from libs.common.logs import get_logger
from services.integrations import oauth, sync_state
from services.integrations.grants import PROVIDER_LABELS, GrantStore, NotConnected, not_audited
from services.integrations.models import connections
from services.integrations.sync_types import GOOGLE_CALENDAR, QUICKBOOKS, Grant, PassResult, SyncContext

log = get_logger(__name__)

PassFn = Callable[[SyncContext], Awaitable[PassResult]]

NOT_CONFIGURED = "not_configured"
NOT_CONNECTED = "not_connected"
NOT_DUE = "not_due"
NO_CALENDAR = "no_calendar"
BREAKER_OPEN = "breaker_open"
REVOKED = "revoked"


@dataclass(frozen=True)
class SyncOutcome:
    skipped: bool
    skip_reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)


def provider_pass(provider: str) -> PassFn:
    """The provider module's pass (imported here: the modules import the service core, not back)."""
    if provider == GOOGLE_CALENDAR:
        from services.integrations.gcal import gcal_pass

        return gcal_pass
    if provider == QUICKBOOKS:
        from services.integrations.qbo import qbo_pass

        return qbo_pass
    raise ValueError(f"unknown provider {provider!r}")


@dataclass
class SyncRunner:
    store: GrantStore
    # The pass per provider; None: the provider module's (tests of the runner alone may give their own).
    passes: dict[str, PassFn] = field(default_factory=dict)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    _locks: dict[tuple[uuid.UUID, str], asyncio.Lock] = field(default_factory=dict)

    def breaker(self, provider: str) -> CircuitBreaker:
        if provider not in self.breakers:
            settings = self.store.settings
            self.breakers[provider] = CircuitBreaker(
                f"integrations_{provider}",
                failure_threshold=settings.integrations_breaker_failures,
                reset_seconds=settings.integrations_breaker_reset_seconds,
            )
        return self.breakers[provider]

    async def sync(self, org_id: uuid.UUID, provider: str, *, force: bool = False) -> SyncOutcome:
        lock = self._locks.setdefault((org_id, provider), asyncio.Lock())
        async with lock:
            with not_audited():  # bookkeeping, every few minutes per org: see grants.not_audited
                return await self._sync(org_id, provider, force)

    async def _sync(self, org_id: uuid.UUID, provider: str, force: bool) -> SyncOutcome:
        settings = self.store.settings
        if not settings.configured(provider):
            return SyncOutcome(True, NOT_CONFIGURED)
        async with unit_of_work(self.store.db, org_id) as uow:
            row = (
                await uow.session.execute(
                    select(connections.c.status, connections.c.account_id).where(
                        connections.c.org_id == org_id, connections.c.provider == provider
                    )
                )
            ).first()
            state = await sync_state.load_in(uow, org_id, provider)
        if row is None or row.status != "connected":
            return SyncOutcome(True, NOT_CONNECTED)
        if not row.account_id:
            return SyncOutcome(True, NO_CALENDAR)
        now = datetime.now(UTC)
        if not force and not sync_state.due(state, settings.interval_seconds(provider), now):
            return SyncOutcome(True, NOT_DUE)
        breaker = self.breaker(provider)
        if not breaker.allow():
            return SyncOutcome(True, BREAKER_OPEN)
        return await self._run(org_id, provider, state, now, breaker)

    async def _run(
        self,
        org_id: uuid.UUID,
        provider: str,
        state: sync_state.SyncStateRow,
        now: datetime,
        breaker: CircuitBreaker,
    ) -> SyncOutcome:
        label = PROVIDER_LABELS.get(provider, provider)
        account_id = state.account_id
        # The cursor a failed pass leaves: the stored one, unless the account changed (then none).
        kept: str | None = None
        try:
            grant = await self.store.current_grant(org_id, provider)
            account_id = grant.account_id
            if state.account_id != grant.account_id:
                state = replace(state, account_id=grant.account_id, cursor="")
                kept = ""
            pass_fn = self.passes.get(provider) or provider_pass(provider)
            ctx = SyncContext(
                db=self.store.db,
                settings=self.store.settings,
                peers=self.store.peers,
                org_id=org_id,
                grant=grant,
                state=state,
                now=now,
                refresh_grant=lambda: self._refresh(ctx),
            )
            result = await pass_fn(ctx)
        except NotConnected:
            breaker.record_neutral()
            return SyncOutcome(True, NOT_CONNECTED)
        except oauth.GrantRevoked as revoked:
            breaker.record_success()  # the provider answered
            await self.store.mark_revoked(org_id, provider, str(revoked))  # no-op when already marked
            await self._record(
                org_id, provider, account_id, kept, state.counts, f"revoked: {label} refused the grant"
            )
            return SyncOutcome(True, REVOKED)
        except oauth.RateLimited as limited:
            breaker.record_failure()
            error = f"rate limited by {label} (retry after {limited.retry_after:g} s); the pass resumes from its cursor"
            await self._record(org_id, provider, account_id, kept, {}, error)
            raise Unavailable(
                error, code="provider_rate_limited", retry_after_seconds=max(1, int(limited.retry_after))
            ) from None
        except oauth.ProviderUnavailable as down:
            breaker.record_failure()
            error = f"{label} unavailable: {down}"[:500]
            await self._record(org_id, provider, account_id, kept, {}, error)
            raise Unavailable(
                f"{label} is unavailable; the pass resumes from its cursor", code="provider_unavailable"
            ) from None
        except oauth.OAuthRefused as refused:
            breaker.record_success()
            error = f"{label} refused the token refresh: {refused}"[:500]
            await self._record(org_id, provider, account_id, kept, {}, error)
            raise FailedPrecondition(error, code="oauth_refresh_refused") from None
        except ServiceError as error:
            breaker.record_neutral()
            await self._record(org_id, provider, account_id, kept, {}, f"{error.code}: {error.detail}"[:500])
            raise
        except Exception as error:
            breaker.record_neutral()
            log.exception("integration_pass_failed", org_id=str(org_id), provider=provider)
            await self._record(
                org_id, provider, account_id, kept, {}, f"internal error ({type(error).__name__})"
            )
            raise
        breaker.record_success()
        await self._record(
            org_id, provider, account_id, result.cursor, result.counts, result.error, success=True
        )
        log.info("integration_pass_done", org_id=str(org_id), provider=provider, counts=result.counts)
        return SyncOutcome(False, "", dict(result.counts))

    async def _refresh(self, ctx: SyncContext) -> Grant:
        ctx.grant = await self.store.refreshed_grant(ctx.org_id, ctx.grant.provider)
        return ctx.grant

    async def _record(
        self,
        org_id: uuid.UUID,
        provider: str,
        account_id: str,
        cursor: str | None,
        counts: dict[str, int],
        error: str,
        *,
        success: bool | None = None,
    ) -> None:
        try:
            await sync_state.record_pass(
                self.store.db, org_id, provider, account_id, cursor, counts, error, success=success
            )
        except ServiceError as failed:  # the database away: the pass's own error is what is raised
            log.warning("sync_state_not_recorded", org_id=str(org_id), provider=provider, error=str(failed))
