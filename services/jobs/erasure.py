"""The erasure driver (seed 002's data delete playbook, issue 13): every open deletion request of the
org the runner is acting in, driven through one idempotent step per service.

Booking keeps the requests and which of their steps are done; each service erases the person from its
own schema (cws.common.v1.PrivacyService.ErasePerson). The steps run in the order of STEPS: media,
billing, notify and iam match the person's rows by the ids and values the Person carries, so they do
not depend on one another and a failed one does not hold up the next; booking's own step (bookings
detached from leads, leads anonymised) runs last and only once the other four are done, so a request
whose run failed half-way can still be re-resolved from booking's leads on the next run.

A step that fails (the service is down, answers an error, or says the step is still pending) is
recorded with the reason and tried again on the next run; the driver never raises for one step, and
reports what it did as counts. A reason is the status code and the service's short message with the
person's values scrubbed out: booking keeps it as the step's last_error, which operators read.

Before its first step on a service in a run, the driver gives that service's channel up to
PEER_READY_SECONDS to connect: a channel that saw the service down reconnects on a growing backoff, so
a service restarted a moment ago would otherwise fail the next run's step as well."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from cws.booking.v1 import booking_pb2
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc

from libs.common.grpc_client import Peer
from libs.common.logs import get_logger
from libs.common.privacy import Scrubber, needles
from services.jobs.peers import Peers

if TYPE_CHECKING:
    from cws.common.v1.privacy_pb2_grpc import PrivacyServiceAsyncStub

log = get_logger(__name__)

# The order of booking's DeletionStep names; booking's own is last (see the module's docstring).
STEPS: tuple[str, ...] = ("media", "billing", "notify", "iam", "booking")
LAST = "booking"
# Booking keeps the reason as the step's last_error: short, and never the person's data.
REASON_CHARS = 200
# Codes of a call the service never answered (down, too slow, connection cut).
NO_ANSWER = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
# How long a run waits, once per service, for a channel that is (re)connecting.
PEER_READY_SECONDS = 10.0


@dataclass
class ErasureCounts:
    deletion_requests_processed: int = 0
    deletion_requests_completed: int = 0
    deletion_steps_failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class Reachability:
    """The services whose channel this run has waited for already: a service that is down costs the
    run one wait, not one per request."""

    waited: set[str] = field(default_factory=set)

    async def wait(self, step: str, channel: grpc.aio.Channel) -> None:
        if step in self.waited:
            return
        self.waited.add(step)
        # Not ready in time: the call below fails fast with UNAVAILABLE, which is the step's answer.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PEER_READY_SECONDS):
                await channel.channel_ready()


@dataclass
class StepOutcome:
    done: bool
    error: str = ""
    invoice_ids: list[str] = field(default_factory=list)


def _reason(text: str, person: privacy_pb2.Person) -> str:
    """`text` (a peer's message) without the person's values, cut to what booking keeps."""
    scrubbed, _ = Scrubber(needles(person)).scrub(text)
    return str(scrubbed)[:REASON_CHARS]


def _failure(step: str, error: grpc.aio.AioRpcError, person: privacy_pb2.Person) -> str:
    """A failed call as its step's reason. When the service did not answer, the transport's message
    (addresses of the suite's hosts) is not for the org's admins, who see the request's steps."""
    code = error.code()
    if code in NO_ANSWER:
        return f"{code.name}: the {step} service did not answer"
    return _reason(f"{code.name}: {error.details() or ''}".strip(), person)


def _peer(peers: Peers, step: str) -> Peer[object] | None:
    """The service a step calls; None when it is not deployed (media without MEDIA_GRPC_TARGET)."""
    chosen: Peer[object] | None = getattr(peers, step)
    return chosen


async def erase_step(
    peers: Peers, step: str, request_id: str, person: privacy_pb2.Person, reach: Reachability
) -> StepOutcome:
    """One service's ErasePerson for the person; what to record for it. Never raises for the peer's
    answer (down, refused, unimplemented): that is a step not done, with its reason."""
    peer = _peer(peers, step)
    if peer is None:
        # Media not deployed: no photo of anyone was ever stored, so there is nothing to erase.
        return StepOutcome(done=True)
    privacy: PrivacyServiceAsyncStub = privacy_pb2_grpc.PrivacyServiceStub(peer.channel)
    await reach.wait(step, peer.channel)
    try:
        answer = await privacy.ErasePerson(
            privacy_pb2.ErasePersonRequest(request_id=request_id, person=person)
        )
    except grpc.aio.AioRpcError as error:
        return StepOutcome(done=False, error=_failure(step, error, person))
    invoice_ids = list(answer.invoice_ids)
    if answer.pending_reason:
        return StepOutcome(
            done=False, error=_reason(f"pending: {answer.pending_reason}", person), invoice_ids=invoice_ids
        )
    return StepOutcome(done=True, invoice_ids=invoice_ids)


def _with_invoices(person: privacy_pb2.Person, invoice_ids: Sequence[str]) -> None:
    """Billing's answer joins the person, so notify's and iam's steps match rows keyed by invoice."""
    known = set(person.invoice_ids)
    person.invoice_ids.extend(i for i in invoice_ids if i not in known)


async def _record(
    peers: Peers, request_id: str, step: str, outcome: StepOutcome
) -> booking_pb2.DeletionRequest | None:
    """Booking's record of the step; None if booking did not take it (the step runs again next time:
    every step is idempotent)."""
    try:
        recorded = await peers.booking.stub.RecordDeletionStep(
            booking_pb2.RecordDeletionStepRequest(
                request_id=request_id,
                step=step,
                done=outcome.done,
                error=outcome.error,
                invoice_ids=outcome.invoice_ids,
            )
        )
    except grpc.aio.AioRpcError as error:
        log.warning(
            "erasure_step_not_recorded",
            deletion_request_id=request_id,
            step=step,
            done=outcome.done,
            error=error.code().name,
        )
        return None
    return recorded.request


async def drive_request(
    peers: Peers, pending: booking_pb2.PendingDeletion, counts: ErasureCounts, reach: Reachability
) -> None:
    """The steps of one request not yet done, in order; the request completed when booking says so."""
    request = pending.request
    person = privacy_pb2.Person()
    person.CopyFrom(pending.person)
    done = {step.name for step in request.steps if step.done}
    status = request.status

    async def run(step: str) -> None:
        nonlocal status
        outcome = await erase_step(peers, step, request.id, person, reach)
        if outcome.invoice_ids:
            _with_invoices(person, outcome.invoice_ids)
        recorded = await _record(peers, request.id, step, outcome)
        if outcome.done and recorded is not None:
            done.add(step)
            status = recorded.status
        else:
            counts.deletion_steps_failed += 1
            if recorded is not None:
                status = recorded.status
        # The step's name and outcome only: the request id is booking's, the person never appears.
        (log.info if outcome.done else log.warning)(
            "erasure_step",
            deletion_request_id=request.id,
            step=step,
            done=outcome.done,
            recorded=recorded is not None,
            error=outcome.error,
        )

    for step in STEPS:
        if step != LAST and step not in done:
            await run(step)
    # Booking last, and only once every other step is done. Run again even when it is recorded done
    # but the request is still open (booking stopped between the two): it is idempotent, and its
    # record is what completes the request.
    if all(step in done for step in STEPS if step != LAST) and (LAST not in done or status != "completed"):
        await run(LAST)
    if status == "completed":
        counts.deletion_requests_completed += 1


async def drive_erasures(peers: Peers) -> dict[str, int]:
    """Every open deletion request of the org (booking's ListPendingDeletions, one page a run),
    driven as far as the services allow. Raises only if booking cannot list them (no step was tried)."""
    counts, reach = ErasureCounts(), Reachability()
    listed = await peers.booking.stub.ListPendingDeletions(booking_pb2.ListPendingDeletionsRequest())
    for pending in listed.deletions:
        counts.deletion_requests_processed += 1
        await drive_request(peers, pending, counts, reach)
    return counts.as_dict()
