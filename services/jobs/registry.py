"""The jobs the scheduler knows. Each is one gRPC call to the service that owns the data, made per
org when the data is tenant data; a later job joins by adding one entry to REGISTRY, as
accounting-export, gcal-sync and qbo-sync did.

A job's work takes the peers and calls a typed stub method; it never says who it acts as: the runner
(execution.py) makes every call of a per-org job inside `acting_as(service_context("jobs", org_id))`
for each org in turn, and a job that is not per org with no org.

Every job is an idempotent call (a cleanup deletes what is still due, a scan deduplicates by key, a
digest is sent once per period), so running one twice, or again after a runner died half-way through
the orgs, finishes the work and never repeats it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from cws.billing.v1 import billing_pb2
from cws.booking.v1 import booking_pb2
from cws.common.v1 import ops_pb2, ops_pb2_grpc
from cws.integrations.v1 import integrations_pb2
from cws.media.v1 import media_pb2
from cws.notify.v1 import notify_pb2
from google.protobuf.message import Message

from services.jobs.erasure import drive_erasures
from services.jobs.peers import Peers
from services.jobs.settings import JobsSettings

# peers -> counts for the job's detail, in the org (or none) the runner is acting in.
Work = Callable[[Peers], Awaitable[dict[str, int]]]


@dataclass(frozen=True)
class Job:
    name: str
    interval_seconds: int
    per_org: bool
    run: Work
    # Each org's share also runs under a lock of that org's (execution.org_lock_key), which a run for
    # one org now takes instead of the job's lock: the retention cleanup an admin asks for waits for
    # the scheduled run of its own org only, never for the whole walk over every org.
    org_locked: bool = False
    # Asked once before the job's calls (before a per-org job walks the orgs): raises JobSkipped when
    # the job cannot run here at all (its service is not deployed).
    precondition: Callable[[Peers], None] | None = None
    # Given a per-org run's detail after every org answered: raises JobSkipped (with the detail) when
    # each org was skipped for a reason the whole installation shares (a provider not configured).
    conclude: Callable[[dict[str, int]], None] | None = None


class JobSkipped(Exception):
    """Raised by a job that cannot run here at all (its service is not deployed, or not configured):
    outcome "skipped", the reason as the run's error, and the detail of what was asked, if any."""

    def __init__(self, reason: str, detail: dict[str, int] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or {}


class ScheduleError(ValueError):
    """JOB_SCHEDULE, JOB_NAMES or --job name a job that does not exist."""


def counts(message: Message, prefix: str = "") -> dict[str, int]:
    """The numeric fields of a response (deleted, sent, ...) as the run's detail counts."""
    values = {field.name: getattr(message, field.name) for field in message.DESCRIPTOR.fields}
    return {prefix + name: int(value) for name, value in values.items() if isinstance(value, int)}


async def cleanup(peers: Peers) -> dict[str, int]:
    request = booking_pb2.CleanupPendingBookingsRequest()
    return counts(await peers.booking.stub.CleanupPendingBookings(request))


async def email_scan(peers: Peers) -> dict[str, int]:
    return counts(await peers.notify.stub.ScanReminders(notify_pb2.ScanRemindersRequest()))


async def outbox_delivery(peers: Peers) -> dict[str, int]:
    # Not per org: notify claims due rows across orgs itself (its delivery loop normally does this).
    return counts(await peers.notify.stub.DeliverDue(notify_pb2.DeliverDueRequest()))


async def email_dlq(peers: Peers) -> dict[str, int]:
    return counts(await peers.notify.stub.RetryDeadEmails(notify_pb2.RetryDeadEmailsRequest()))


@dataclass
class RetentionPass:
    """What one org's retention cleanup did: its counts, and the calls that failed outright (the
    service each was made to, and its error), after every part was tried."""

    counts: dict[str, int]
    failures: list[tuple[str, grpc.aio.AioRpcError]]


async def retention_pass(peers: Peers) -> RetentionPass:
    """Booking's and notify's RETENTION_* deletions, then every open deletion request driven through
    its steps (erasure.py). Each part runs whatever happened to the one before: a service that is
    down must not keep the others from their work, nor a person from being erased where they can."""
    found: dict[str, int] = {}
    failures: list[tuple[str, grpc.aio.AioRpcError]] = []
    try:
        in_booking = await peers.booking.stub.RetentionCleanup(booking_pb2.RetentionCleanupRequest())
        found |= counts(in_booking, "booking_")
    except grpc.aio.AioRpcError as error:
        failures.append(("booking", error))
    try:
        in_notify = await peers.notify.stub.RetentionCleanup(notify_pb2.RetentionCleanupRequest())
        found |= counts(in_notify, "notify_")
    except grpc.aio.AioRpcError as error:
        failures.append(("notify", error))
    try:
        found |= await drive_erasures(peers)
    except grpc.aio.AioRpcError as error:  # booking could not list the requests: no step was tried
        failures.append(("booking", error))
    return RetentionPass(found, failures)


async def retention_cleanup(peers: Peers) -> dict[str, int]:
    # An erasure step that failed is in the counts (deletion_steps_failed) and is retried on the next
    # run; a retention call that failed fails this org, as it always did, once the rest has run.
    done = await retention_pass(peers)
    if done.failures:
        raise done.failures[0][1]
    return done.counts


def digests(schedule: str) -> Work:
    async def run(peers: Peers) -> dict[str, int]:
        return counts(await peers.notify.stub.RunDigests(notify_pb2.RunDigestsRequest(schedule=schedule)))

    return run


async def event_retention(peers: Peers) -> dict[str, int]:
    """Each service prunes its own event outbox, inbox and dead letters, at its EVENT_RETENTION_DAYS.
    (jobs' own event tables stay empty: it publishes and consumes nothing.)"""
    found: dict[str, int] = {}
    for peer in (peers.iam, peers.booking, peers.billing, peers.notify):
        ops = ops_pb2_grpc.OpsServiceStub(peer.channel)
        found |= counts(await ops.PruneEventTables(ops_pb2.PruneEventTablesRequest()), f"{peer.name}_")
    return found


async def invoices_overdue(peers: Peers) -> dict[str, int]:
    # Billing compares due dates with today in the org's own time zone; marking is idempotent (only
    # SENT invoices move), so a run repeated the same day marks nothing twice.
    return counts(await peers.billing.stub.MarkOverdue(billing_pb2.MarkOverdueRequest()))


async def accounting_export(peers: Peers) -> dict[str, int]:
    # Billing exports the previous month (in the org's zone) once, recorded per org and month, so the
    # daily run sends each month on the first run after it ends and skips it ever after.
    request = billing_pb2.RunAccountingExportRequest()
    return counts(await peers.billing.stub.RunAccountingExport(request))


async def storage_janitor(peers: Peers) -> dict[str, int]:
    # Not per org: one call, in which media leases due tombstones of every org (its SECURITY DEFINER
    # media.claim_tombstones) and works each off in its own org; a failed delete stays, with backoff.
    if peers.media is None:
        raise JobSkipped("media is not deployed here (MEDIA_GRPC_TARGET is empty)")
    return counts(await peers.media.stub.RunStorageJanitor(media_pb2.RunStorageJanitorRequest()))


# gcal-sync and qbo-sync (issue 17): the integrations service runs one pass for the org when it is due
# (GCAL_SYNC_INTERVAL_SECONDS / QBO_SYNC_INTERVAL_SECONDS per org, applied there) and says why it
# skipped otherwise; the job runs every minute so no org waits much past its own interval.
SYNC_SKIP_PREFIX = "skipped_"
NOT_CONFIGURED = "not_configured"
SYNC_PROVIDERS = {
    "gcal-sync": (
        "Google Calendar",
        "GOOGLE_OAUTH_CLIENT_ID, GOOGLE_OAUTH_CLIENT_SECRET, GOOGLE_OAUTH_REDIRECT_URI",
    ),
    "qbo-sync": (
        "QuickBooks Online",
        "QUICKBOOKS_OAUTH_CLIENT_ID, QUICKBOOKS_OAUTH_CLIENT_SECRET, QUICKBOOKS_OAUTH_REDIRECT_URI",
    ),
}


def integrations_deployed(peers: Peers) -> None:
    if peers.integrations is None:
        raise JobSkipped("integrations is not deployed here (INTEGRATIONS_GRPC_TARGET is empty)")


def sync_counts(
    response: integrations_pb2.SyncGoogleCalendarResponse | integrations_pb2.SyncQuickBooksResponse,
) -> dict[str, int]:
    """One org's answer as the run's detail: the pass's counts and `synced`, or `skipped_<reason>`
    (not_connected, not_due, no_calendar, breaker_open, not_configured...), so the run says why."""
    if response.skipped:
        return {SYNC_SKIP_PREFIX + (response.skip_reason or "unknown"): 1}
    return {"synced": 1, **{name: int(value) for name, value in response.counts.items()}}


async def gcal_sync(peers: Peers) -> dict[str, int]:
    assert peers.integrations is not None  # the job's precondition
    request = integrations_pb2.SyncGoogleCalendarRequest()
    return sync_counts(await peers.integrations.stub.SyncGoogleCalendar(request))


async def qbo_sync(peers: Peers) -> dict[str, int]:
    assert peers.integrations is not None  # the job's precondition
    request = integrations_pb2.SyncQuickBooksRequest()
    return sync_counts(await peers.integrations.stub.SyncQuickBooks(request))


def skipped_unless_configured(name: str) -> Callable[[dict[str, int]], None]:
    """A sync run in which every org answered not_configured is the installation's, not the orgs':
    the run is skipped, naming the settings that turn the provider on."""
    provider, settings = SYNC_PROVIDERS[name]

    def conclude(detail: dict[str, int]) -> None:
        orgs = detail.get("orgs", 0)
        if orgs and detail.get(SYNC_SKIP_PREFIX + NOT_CONFIGURED, 0) == orgs:
            raise JobSkipped(f"{provider} is not configured here ({settings})", detail)

    return conclude


REGISTRY: tuple[Job, ...] = (
    Job("cleanup", 3600, per_org=True, run=cleanup),
    Job("email-scan", 300, per_org=True, run=email_scan),
    Job("outbox-delivery", 60, per_org=False, run=outbox_delivery),
    Job("email-dlq", 600, per_org=True, run=email_dlq),
    # Also drives the org's open deletion requests (erasure.py); POST /v1/admin/retention/cleanup runs
    # it for one org now (grpc_api.py).
    Job("retention-cleanup", 86400, per_org=True, run=retention_cleanup, org_locked=True),
    # Every minute: the digest state dedupes per period in each org's time zone.
    Job("notifications-digest-daily", 60, per_org=True, run=digests("daily")),
    Job("notifications-digest-weekly", 60, per_org=True, run=digests("weekly")),
    Job("notifications-digest-monthly", 60, per_org=True, run=digests("monthly")),
    Job("storage-janitor", 3600, per_org=False, run=storage_janitor),
    Job("event-retention", 86400, per_org=False, run=event_retention),
    # Hourly, though its effect is daily: billing marks against today in each org's own zone, so an
    # hourly run marks an invoice within the hour its org's day turns, wherever the org is.
    Job("invoices-overdue", 3600, per_org=True, run=invoices_overdue),
    # Daily: the month an org's export covers turns over at its own midnight; a day late is fine for
    # month-end books, and a run that finds the month exported does nothing.
    Job("accounting-export", 86400, per_org=True, run=accounting_export),
    Job(
        "gcal-sync",
        60,
        per_org=True,
        run=gcal_sync,
        precondition=integrations_deployed,
        conclude=skipped_unless_configured("gcal-sync"),
    ),
    Job(
        "qbo-sync",
        60,
        per_org=True,
        run=qbo_sync,
        precondition=integrations_deployed,
        conclude=skipped_unless_configured("qbo-sync"),
    ),
)

JOB_NAMES = tuple(job.name for job in REGISTRY)


def _unknown(names: Sequence[str], setting: str) -> None:
    unknown = sorted(set(names) - set(JOB_NAMES))
    if unknown:
        raise ScheduleError(
            f"{setting}: unknown job {', '.join(unknown)} (known jobs: {', '.join(JOB_NAMES)})"
        )


def scheduled_jobs(settings: JobsSettings, names: Sequence[str] = ()) -> list[Job]:
    """The jobs to run, in registry order, with JOB_SCHEDULE's intervals applied. `names` (the CLI's
    --job list) wins over JOB_NAMES; neither given means every job."""
    intervals = settings.intervals()
    _unknown(list(intervals), "JOB_SCHEDULE")
    _unknown(settings.job_names, "JOB_NAMES")
    _unknown(names, "--job")
    wanted = set(names or settings.job_names or JOB_NAMES)
    return [
        dataclasses.replace(job, interval_seconds=intervals.get(job.name, job.interval_seconds))
        for job in REGISTRY
        if job.name in wanted
    ]


def all_jobs(settings: JobsSettings) -> list[Job]:
    """Every registered job with its effective interval (the status view lists even those not run)."""
    return scheduled_jobs(settings, JOB_NAMES)
