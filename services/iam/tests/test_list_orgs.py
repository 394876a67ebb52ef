"""IAM's ListOrgs: the one door through which a suite service (the jobs scheduler) walks every org.
Only service contexts may use it; it pages by key (after_org_id), and returns ids, names and time
zones only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from cws.iam.v1 import iam_pb2, iam_pb2_grpc

from libs.common import context as request_context
from tools.testkit import as_service, rpc_error, signed, signing_channel

Code = grpc.StatusCode
AuthMethod = request_context.AuthMethod


@pytest.fixture
async def stub(iam: Any) -> AsyncIterator[iam_pb2_grpc.IamServiceStub]:
    async with signing_channel(iam.target) as channel:
        yield iam_pb2_grpc.IamServiceStub(channel)


async def every_org(stub: Any, limit: int) -> list[iam_pb2.OrgSummary]:
    found: list[iam_pb2.OrgSummary] = []
    after = ""
    while True:
        page = await stub.ListOrgs(
            iam_pb2.ListOrgsRequest(after_org_id=after, limit=limit), metadata=as_service("", "jobs")
        )
        assert len(page.orgs) <= limit
        found.extend(page.orgs)
        if len(page.orgs) < limit:
            return found
        after = page.orgs[-1].org_id


async def test_service_pages_through_every_org_once_in_id_order(stub: Any, make_org: Any) -> None:
    mine = [await make_org(f"Paged {n}", "America/Edmonton") for n in range(3)]

    paged = await every_org(stub, limit=2)
    ids = [org.org_id for org in paged]
    assert len(ids) == len(set(ids))  # no org twice across pages
    assert [uuid.UUID(i) for i in ids] == sorted(uuid.UUID(i) for i in ids)
    by_id = {org.org_id: org for org in paged}
    for n, org in enumerate(mine):
        assert (by_id[org.org_id].name, by_id[org.org_id].time_zone) == (f"Paged {n}", "America/Edmonton")
    # One big page (limit 0 = the default) holds the same orgs as the small pages.
    whole = await stub.ListOrgs(iam_pb2.ListOrgsRequest(), metadata=as_service("", "jobs"))
    assert [org.org_id for org in whole.orgs] == ids

    # Keyset: after an org, only orgs with a greater id.
    pivot = sorted(org.org_id for org in mine)[0]
    after = await stub.ListOrgs(
        iam_pb2.ListOrgsRequest(after_org_id=pivot, limit=1000), metadata=as_service("", "jobs")
    )
    assert all(uuid.UUID(org.org_id) > uuid.UUID(pivot) for org in after.orgs)
    assert [org.org_id for org in after.orgs] == ids[ids.index(pivot) + 1 :]


async def test_bad_paging_arguments_are_invalid(stub: Any) -> None:
    for request, field in (
        (iam_pb2.ListOrgsRequest(limit=-1), "limit"),
        (iam_pb2.ListOrgsRequest(limit=1001), "limit"),
        (iam_pb2.ListOrgsRequest(after_org_id="not-a-uuid"), "after_org_id"),
    ):
        error = await rpc_error(
            stub.ListOrgs(request, metadata=as_service("", "jobs")), Code.INVALID_ARGUMENT
        )
        assert field in {v.field for v in error.violations}, error


async def test_non_service_callers_are_refused(stub: Any, make_org: Any) -> None:
    org = await make_org()
    request = iam_pb2.ListOrgsRequest(limit=10)
    callers = {
        "owner": request_context.RequestContext(
            org_id=org.org_id,
            principal_id=org.owner_id,
            role="OWNER",
            auth_method=AuthMethod.Value("AUTH_METHOD_JWT"),
        ),
        "basic admin": request_context.RequestContext(
            org_id=org.org_id,
            principal_id="basic:admin",
            role="ADMIN",
            auth_method=AuthMethod.Value("AUTH_METHOD_BASIC"),
        ),
        "anonymous": request_context.RequestContext(auth_method=AuthMethod.Value("AUTH_METHOD_ANONYMOUS")),
        # A user whose id merely looks like a service's is still a user.
        "user named like a service": request_context.RequestContext(
            org_id=org.org_id,
            principal_id="service:jobs",
            role="ADMIN",
            auth_method=AuthMethod.Value("AUTH_METHOD_JWT"),
        ),
        # The service method without a service principal is no service either.
        "service method, user principal": request_context.RequestContext(
            org_id=org.org_id, principal_id=org.owner_id, role="ADMIN", auth_method=request_context.SERVICE
        ),
    }
    # The gateway may not speak for a suite service at all: those two stop at the signature check.
    claims_service = {"user named like a service", "service method, user principal"}
    for label, ctx in callers.items():
        error = await rpc_error(stub.ListOrgs(request, metadata=signed(ctx)), Code.PERMISSION_DENIED)
        expected = "principal_not_allowed" if label in claims_service else "service_only"
        assert error.reason == expected, (label, error)
    # And no context at all is no caller.
    await rpc_error(stub.ListOrgs(request), Code.UNAUTHENTICATED)
