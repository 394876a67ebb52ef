"""The services' typed stubs as route dependencies.

A route declares what it calls (`booking: Booking`) and calls it (`await booking.CreateLead(req)`),
so no route reads `app.state` and no method name is a string; a reader jumps from the call to the
servicer method with go-to-definition (the `...AsyncStub` types are what mypy-protobuf generates).

Who a call acts as is the request's context, signed by the interceptor in libs/common/grpc_client.py.
The innermost middleware (gateway/middleware/call_context.py) sets it once authentication and
break-glass have settled the principal; a portal route's principal dependency (gateway/portal_auth.py)
narrows it to the portal user (`set_outgoing(context_for(...))`); a route acting for someone else
states it with `acting_as(...)`. Setting it there and not here keeps
it independent of the order FastAPI resolves a route's dependencies in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from gateway.clients import Backends
from gateway.problems import ProblemError

if TYPE_CHECKING:
    from cws.billing.v1.billing_pb2_grpc import BillingServiceAsyncStub as BillingStub
    from cws.booking.v1.booking_pb2_grpc import BookingServiceAsyncStub as BookingStub
    from cws.common.v1.privacy_pb2_grpc import PrivacyServiceAsyncStub as PrivacyStub
    from cws.common.v1.views_pb2_grpc import ViewsServiceAsyncStub as ViewsStub
    from cws.iam.v1.iam_pb2_grpc import IamServiceAsyncStub as IamStub
    from cws.integrations.v1.integrations_pb2_grpc import IntegrationsServiceAsyncStub as IntegrationsStub
    from cws.jobs.v1.jobs_pb2_grpc import JobsServiceAsyncStub as JobsStub
    from cws.media.v1.media_pb2_grpc import MediaServiceAsyncStub as MediaStub
    from cws.notify.v1.notify_pb2_grpc import NotifyServiceAsyncStub as NotifyStub
else:  # FastAPI reads annotations at run time, where only the generated classes exist
    from cws.billing.v1.billing_pb2_grpc import BillingServiceStub as BillingStub
    from cws.booking.v1.booking_pb2_grpc import BookingServiceStub as BookingStub
    from cws.common.v1.privacy_pb2_grpc import PrivacyServiceStub as PrivacyStub
    from cws.common.v1.views_pb2_grpc import ViewsServiceStub as ViewsStub
    from cws.iam.v1.iam_pb2_grpc import IamServiceStub as IamStub
    from cws.integrations.v1.integrations_pb2_grpc import IntegrationsServiceStub as IntegrationsStub
    from cws.jobs.v1.jobs_pb2_grpc import JobsServiceStub as JobsStub
    from cws.media.v1.media_pb2_grpc import MediaServiceStub as MediaStub
    from cws.notify.v1.notify_pb2_grpc import NotifyServiceStub as NotifyStub


def backends_of(conn: HTTPConnection) -> Backends:
    """For the few places outside routes that need a backend itself (middleware, readiness)."""
    backends: Backends = conn.app.state.backends
    return backends


async def iam_stub(conn: HTTPConnection) -> IamStub:
    return backends_of(conn).iam.stub


async def booking_stub(conn: HTTPConnection) -> BookingStub:
    return backends_of(conn).booking.stub


async def billing_stub(conn: HTTPConnection) -> BillingStub:
    return backends_of(conn).billing.stub


async def media_stub(conn: HTTPConnection) -> MediaStub:
    return backends_of(conn).media.stub


async def notify_stub(conn: HTTPConnection) -> NotifyStub:
    return backends_of(conn).notify.stub


async def jobs_stub(conn: HTTPConnection) -> JobsStub:
    return backends_of(conn).jobs.stub


async def integrations_stub(conn: HTTPConnection) -> IntegrationsStub:
    backend = backends_of(conn).integrations
    if backend is None:
        raise ProblemError(
            503,
            "integrations_not_deployed",
            "integrations is not deployed here (INTEGRATIONS_GRPC_TARGET is empty)",
        )
    return backend.stub


async def views_stubs(conn: HTTPConnection) -> dict[str, ViewsStub]:
    return backends_of(conn).views()


async def privacy_stubs(conn: HTTPConnection) -> dict[str, PrivacyStub]:
    return backends_of(conn).privacy()


# Every backend, for the few routes that ask all of them (/readyz, feature flags).
AllBackends = Annotated[Backends, Depends(backends_of)]
Iam = Annotated[IamStub, Depends(iam_stub)]
Booking = Annotated[BookingStub, Depends(booking_stub)]
Billing = Annotated[BillingStub, Depends(billing_stub)]
Media = Annotated[MediaStub, Depends(media_stub)]
Notify = Annotated[NotifyStub, Depends(notify_stub)]
Jobs = Annotated[JobsStub, Depends(jobs_stub)]
Integrations = Annotated[IntegrationsStub, Depends(integrations_stub)]
# ViewsService and PrivacyService of every service serving them, by service name (issue 13): the
# timelines, metrics and exports ask them all in parallel.
Views = Annotated[dict[str, ViewsStub], Depends(views_stubs)]
Privacy = Annotated[dict[str, PrivacyStub], Depends(privacy_stubs)]
