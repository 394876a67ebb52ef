"""What a provider's sync pass is given and returns (gcal.gcal_pass, qbo.qbo_pass).

The sync runner (sync_runner.py) decides whether a pass runs (configured, connected, account chosen,
due, breaker closed), builds a SyncContext and records the PassResult (cursor, counts) or the error.
These types live apart from the runner so the provider modules import nothing of it.

A pass raises oauth.RateLimited / oauth.ProviderUnavailable / oauth.GrantRevoked for the runner to map;
any other failure it wants recorded without failing the job goes into counts (e.g. "errors") and
PassResult.error.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from libs.common.db import Database
    from services.integrations.peers import Peers
    from services.integrations.settings import IntegrationsSettings

GOOGLE_CALENDAR = "google_calendar"
QUICKBOOKS = "quickbooks"
PROVIDERS = (GOOGLE_CALENDAR, QUICKBOOKS)


@dataclass(frozen=True)
class Grant:
    """A connection's usable access token (fresh: current_grant refreshed it if it was expiring).

    account_id is the chosen calendar id (google_calendar; "" until chosen) or the realm id
    (quickbooks); busy_team_id is None for "every team" (google_calendar only)."""

    org_id: uuid.UUID
    provider: str
    access_token: str
    account_id: str
    account_name: str
    busy_team_id: uuid.UUID | None = None


@dataclass(frozen=True)
class SyncStateRow:
    """An org's sync state for one provider (sync_states row; defaults when there is none yet).

    cursor is "" before the first pass, and also when account_id changed (the runner resets it when
    the grant's account differs from the state's account_id, so a pass never sees a stale cursor)."""

    org_id: uuid.UUID
    provider: str
    account_id: str = ""
    cursor: str = ""
    last_sync_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str = ""
    last_error_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class SyncContext:
    """One pass for one org and provider.

    db: the service's Database (open units of work with `unit_of_work(ctx.db, ctx.org_id)`);
    peers: booking/billing/iam/notify stubs (call them inside `acting_as(service_context(
    "integrations", str(org_id)))`, or use peers.acting(org_id)); now: the pass start (UTC);
    refresh_grant(): forces one token refresh (after a 401) and returns the new grant (it raises
    GrantRevoked when the refresh token is dead)."""

    db: Database
    settings: IntegrationsSettings
    peers: Peers
    org_id: uuid.UUID
    grant: Grant
    state: SyncStateRow
    now: datetime
    refresh_grant: Callable[[], Awaitable[Grant]]
    # Free for a pass's own use (e.g. an httpx client it keeps across calls); the runner ignores it.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassResult:
    """cursor: what the next pass starts from (stored as given; "" resets). counts: created, updated,
    deleted, skipped, errors... (shown on the page and in /v1/admin/jobs/status). error: a problem
    that did not stop the pass (e.g. an invoice without a matching tax code): recorded as last_error
    while the pass still counts as a success for the breaker."""

    cursor: str
    counts: dict[str, int]
    error: str = ""
