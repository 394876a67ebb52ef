"""gcal-sync and qbo-sync (issue 17; seed 003's `python -m services.jobs.run --job gcal-sync --once` and
`--job qbo-sync --once`) as subprocesses against the session's real integrations service, which talks to
the local fake Google and Intuit servers: one call per org, each org synced when its own interval says
so and otherwise skipped with the reason in the run's detail; the whole job skipped, saying why, when
integrations is not deployed here or the provider is not configured; a provider that is down fails the
job (the orgs' errors recorded by the service), with no org named in the job's error; and the operators'
status view carries every org's sync state."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cws.integrations.v1 import integrations_pb2 as pb
from cws.integrations.v1 import integrations_pb2_grpc
from cws.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from conftest import integrations_env
from libs.common import context as request_context
from services.jobs.tests.conftest import JobsEnv, reset_jobs, status_row
from tools.devstack import free_port
from tools.processes import service_proc
from tools.testkit import Metadata, signed, signing_channel, sql

JOBS = ("gcal-sync", "qbo-sync")
JWT = request_context.AuthMethod.Value("AUTH_METHOD_JWT")
BASIC = request_context.AuthMethod.Value("AUTH_METHOD_BASIC")
GOOGLE_SETTINGS = "GOOGLE_OAUTH_CLIENT_ID, GOOGLE_OAUTH_CLIENT_SECRET, GOOGLE_OAUTH_REDIRECT_URI"
QUICKBOOKS_SETTINGS = (
    "QUICKBOOKS_OAUTH_CLIENT_ID, QUICKBOOKS_OAUTH_CLIENT_SECRET, QUICKBOOKS_OAUTH_REDIRECT_URI"
)


def as_owner(org: Any) -> Metadata:
    """The org's owner signed in (a connection's state is bound to one user: the same every call)."""
    return signed(
        request_context.RequestContext(
            org_id=org.org_id,
            principal_id=org.owner_id,
            role="OWNER",
            auth_method=JWT,  # type: ignore[arg-type]
            request_id=f"test-{uuid.uuid4().hex[:12]}",
            session_id=str(uuid.uuid4()),
        )
    )


def operator() -> Metadata:
    """The installation's Basic Auth admin, as the gateway signs it: who may read the job status."""
    return signed(
        request_context.RequestContext(
            org_id=str(uuid.uuid4()),
            principal_id="basic:admin",
            role="ADMIN",
            auth_method=BASIC,  # type: ignore[arg-type]
            request_id=f"test-{uuid.uuid4().hex[:12]}",
        )
    )


async def connect(target: str, org: Any, provider: str) -> None:
    """The owner connects `provider` through the service, pressing Allow at the fake's consent page."""
    async with signing_channel(target) as channel:
        stub = integrations_pb2_grpc.IntegrationsServiceStub(channel)
        started = await stub.StartConnect(pb.StartConnectRequest(provider=provider), metadata=as_owner(org))
        async with httpx.AsyncClient(timeout=10) as browser:
            answer = await browser.post(started.authorization_url, data={"decision": "allow"})
        assert answer.status_code == 302, answer.text
        back = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}
        done = await stub.CompleteConnect(
            pb.CompleteConnectRequest(
                state=back["state"], code=back["code"], realm_id=back.get("realmId", "")
            ),
            metadata=as_owner(org),
        )
        assert done.integration.status == "connected", done


async def sync_state(target: str, org: Any, provider: str) -> pb.SyncState:
    async with signing_channel(target) as channel:
        stub = integrations_pb2_grpc.IntegrationsServiceStub(channel)
        listed = await stub.ListIntegrations(pb.ListIntegrationsRequest(), metadata=as_owner(org))
    [found] = [i for i in listed.integrations if i.provider == provider]
    return found.sync


async def run_error(stack: Any, name: str, runner_id: str) -> str:
    """The error the runner recorded for its latest run of `name` (job_runs.error)."""
    rows = await sql(
        stack.admin_url,
        "SELECT error FROM jobs.job_runs WHERE name = %s AND runner_id = %s ORDER BY started_at DESC LIMIT 1",
        (name, runner_id),
    )
    return str(rows[0][0] or "") if rows else ""


async def test_without_integrations_deployed_both_jobs_are_skipped_saying_so(
    jobs_setup: JobsEnv, stack: Any
) -> None:
    await reset_jobs(stack, *JOBS)
    run = await jobs_setup.cli("--job", "gcal-sync", "--job", "qbo-sync", "--once")
    assert run.returncode == 0, run.output
    for name in JOBS:
        skipped = run.event("job_skipped", name)
        assert skipped["outcome"] == "skipped" and skipped["trigger"] == "once", skipped
        assert skipped["reason"] == "integrations is not deployed here (INTEGRATIONS_GRPC_TARGET is empty)"
        row = await status_row(stack, name)
        assert row is not None and row["last_outcome"] == "skipped" and row["consecutive_failures"] == 0
        assert "INTEGRATIONS_GRPC_TARGET" in await run_error(stack, name, jobs_setup.runner_id())


async def test_each_org_syncs_when_due_and_the_run_says_why_the_others_were_skipped(
    integrations_jobs_setup: JobsEnv, integrations: Any, jobs: Any, make_org: Any, stack: Any
) -> None:
    connected, idle = await make_org("Synced Cleaners"), await make_org("Idle Cleaners")
    await connect(integrations.target, connected, "quickbooks")
    await connect(integrations.target, connected, "google_calendar")  # no calendar chosen yet
    await reset_jobs(stack, *JOBS)

    run = await integrations_jobs_setup.cli("--job", "qbo-sync", "--once")
    assert run.returncode == 0, run.output
    done = run.event("job_complete", "qbo-sync")["detail"]
    assert done["orgs"] >= 2 and done["orgs_failed"] == 0, done
    assert done["synced"] >= 1 and done["skipped_not_connected"] >= 1, done  # `idle` among them
    first = await sync_state(integrations.target, connected, "quickbooks")
    assert first.HasField("last_success_at") and first.last_error == "", first
    assert not (await sync_state(integrations.target, idle, "quickbooks")).HasField("last_sync_at")

    # A minute later the job runs again; QBO_SYNC_INTERVAL_SECONDS (900) has not passed for the org.
    again = await integrations_jobs_setup.cli("--job", "qbo-sync", "--once")
    assert again.returncode == 0, again.output
    detail = again.event("job_complete", "qbo-sync")["detail"]
    assert detail["skipped_not_due"] >= 1, detail
    assert (await sync_state(integrations.target, connected, "quickbooks")).last_sync_at == first.last_sync_at

    calendar = await integrations_jobs_setup.cli("--job", "gcal-sync", "--once")
    assert calendar.returncode == 0, calendar.output
    detail = calendar.event("job_complete", "gcal-sync")["detail"]
    assert detail["skipped_no_calendar"] >= 1 and detail["skipped_not_connected"] >= 1, detail
    row = await status_row(stack, "gcal-sync")
    assert row is not None and row["last_outcome"] == "ok", row

    # The operators' status view: the org's QuickBooks sync beside the job that drives it.
    async with signing_channel(jobs.target) as channel:
        status = await jobs_pb2_grpc.JobsServiceStub(channel).GetStatus(
            jobs_pb2.GetStatusRequest(), metadata=operator()
        )
    assert status.integration_syncs_unavailable == ""
    mine = [
        s for s in status.integration_syncs if s.org_id == connected.org_id and s.provider == "quickbooks"
    ]
    assert [s.last_success_at for s in mine] == [first.last_success_at], mine
    assert not [s for s in status.integration_syncs if s.org_id == idle.org_id]
    by_name = {job.name: job for job in status.jobs}
    assert by_name["qbo-sync"].last_outcome == "ok" and by_name["qbo-sync"].interval_seconds == 60


async def test_a_provider_down_fails_the_job_without_naming_an_org(
    integrations_jobs_setup: JobsEnv,
    stack: Any,
    iam: Any,
    booking: Any,
    billing: Any,
    notify: Any,
    fake_google: Any,
    fake_quickbooks: Any,
    make_org: Any,
    stopping: list[Any],
) -> None:
    # The same service over the same database, but QuickBooks' API is at a port nobody listens on (its
    # OAuth server still answers, so the grant is fresh): every due org's pass fails. A high breaker
    # threshold keeps each org's own failure, not the breaker, in this test's view.
    env = {
        **integrations_env(
            stack, iam, booking, billing, notify, fake_google.base_url, fake_quickbooks.base_url
        ),
        "QUICKBOOKS_API_URL": f"http://127.0.0.1:{free_port()}",
        "INTEGRATIONS_BREAKER_FAILURES": "100",
        "INTEGRATIONS_HTTP_TIMEOUT_SECONDS": "2",
    }
    down = service_proc("integrations", env, stack.work_dir / "logs", label="integrations-qbo-down")
    stopping.append(down)
    await down.start().wait_ready_async()
    org = await make_org("Down Cleaners")
    await connect(down.target, org, "quickbooks")
    await reset_jobs(stack, "qbo-sync")

    run = await integrations_jobs_setup.cli(
        "--job", "qbo-sync", "--once", INTEGRATIONS_GRPC_TARGET=down.target
    )
    assert run.returncode == 1, run.output
    failed = run.event("job_failed", "qbo-sync")
    assert failed["detail"]["orgs_failed"] >= 1, failed
    assert "orgs failed (UNAVAILABLE x" in failed["error"], failed
    assert org.org_id not in failed["error"]  # job status is shown to operators, never org ids
    row = await status_row(stack, "qbo-sync")
    assert row is not None and row["last_outcome"] == "failed" and row["consecutive_failures"] == 1, row
    # The service recorded the org's error, kept its cursor, and counts no success.
    state = await sync_state(down.target, org, "quickbooks")
    assert state.last_error and state.HasField("last_error_at") and not state.HasField("last_success_at")


async def test_a_provider_not_configured_skips_the_whole_job_naming_its_settings(
    integrations_jobs_setup: JobsEnv,
    stack: Any,
    iam: Any,
    booking: Any,
    billing: Any,
    notify: Any,
    fake_google: Any,
    fake_quickbooks: Any,
    make_org: Any,
    stopping: list[Any],
) -> None:
    configured = integrations_env(
        stack, iam, booking, billing, notify, fake_google.base_url, fake_quickbooks.base_url
    )
    # Neither OAuth client given (nor a token key: none is needed then).
    env = {
        key: value
        for key, value in configured.items()
        if not key.startswith(("GOOGLE_OAUTH_", "QUICKBOOKS_OAUTH_", "INTEGRATIONS_TOKEN_"))
    }
    bare = service_proc("integrations", env, stack.work_dir / "logs", label="integrations-unconfigured")
    stopping.append(bare)
    await bare.start().wait_ready_async()
    await make_org("Unconfigured Cleaners")  # at least one org to walk
    await reset_jobs(stack, *JOBS)

    run = await integrations_jobs_setup.cli(
        "--job", "gcal-sync", "--job", "qbo-sync", "--once", INTEGRATIONS_GRPC_TARGET=bare.target
    )
    assert run.returncode == 0, run.output
    for name, provider, settings in (
        ("gcal-sync", "Google Calendar", GOOGLE_SETTINGS),
        ("qbo-sync", "QuickBooks Online", QUICKBOOKS_SETTINGS),
    ):
        skipped = run.event("job_skipped", name)
        assert skipped["reason"] == f"{provider} is not configured here ({settings})", skipped
        detail = skipped["detail"]
        assert detail["orgs"] >= 1 and detail["skipped_not_configured"] == detail["orgs"], detail
        row = await status_row(stack, name)
        assert row is not None and row["last_outcome"] == "skipped", row
