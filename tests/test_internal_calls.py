"""Issue 9, hole 6: every internal gRPC hop is signed by the calling process's own key and bound to the
method and the request, fresh and used once; each process holds only the secrets it uses.

The attacks run against the session's real iam and jobs processes over plain gRPC channels with
hand-built metadata, as someone on the service network who captured a call would send them."""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cws.iam.v1 import iam_pb2, iam_pb2_grpc
from cws.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from google.protobuf.message import Message
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from libs.common import call_signing
from libs.common import context as request_context
from libs.common.internal_keys import CallSigner
from services.billing.settings import BillingSettings
from services.booking.settings import BookingSettings
from services.iam.settings import IamSettings
from services.integrations.settings import IntegrationsSettings
from services.jobs.settings import JobsSettings
from services.media.settings import MediaSettings
from services.notify.settings import NotifySettings
from tools.processes import DEV_KEYRING
from tools.testkit import GATEWAY, JWT, rpc_error

Code = grpc.StatusCode
IAM = "/cws.iam.v1.IamService/"
NOTIFY = DEV_KEYRING.signer("notify")
JOBS = DEV_KEYRING.signer("jobs")


@pytest.fixture
async def plain(iam: Any) -> AsyncIterator[grpc.aio.Channel]:
    """No signing interceptor: what reaches IAM is exactly the metadata the test builds."""
    async with grpc.aio.insecure_channel(iam.target) as channel:
        yield channel


def owner_of(org: Any) -> request_context.RequestContext:
    return request_context.RequestContext(
        org_id=org.org_id,
        principal_id=org.owner_id,
        role="OWNER",
        auth_method=JWT,  # type: ignore[arg-type]
        request_id=f"test-{uuid.uuid4().hex[:12]}",
        session_id=str(uuid.uuid4()),
    )


def signed_for(
    method: str,
    request: Message,
    ctx: request_context.RequestContext,
    signer: CallSigner = GATEWAY,
    **stamp: Any,
) -> call_signing.Metadata:
    """The metadata the caller's SigningInterceptor sends with this one call."""
    return call_signing.sign_call(ctx, signer, IAM + method, request.SerializeToString(), **stamp)


def new_email() -> str:
    return f"hole6-{uuid.uuid4().hex[:10]}@example.com"


async def emails_of(stub: Any, org: Any) -> set[str]:
    request = iam_pb2.ListUsersRequest(limit=200)
    listed = await stub.ListUsers(request, metadata=signed_for("ListUsers", request, owner_of(org)))
    return {user.email for user in listed.users}


async def test_a_call_signed_for_its_method_and_body_is_served(plain: Any, make_org: Any) -> None:
    org = await make_org()
    stub = iam_pb2_grpc.IamServiceStub(plain)
    assert org.owner_email in await emails_of(stub, org)


async def test_a_captured_owner_call_replayed_as_create_user_owner_is_refused(
    plain: Any, make_org: Any
) -> None:
    """The attack the issue names: an OWNER's ListUsers, captured on the service network, re-sent to
    IamService/CreateUser{role: OWNER}."""
    org = await make_org()
    stub = iam_pb2_grpc.IamServiceStub(plain)
    listing = iam_pb2.ListUsersRequest(limit=10)
    captured = signed_for("ListUsers", listing, owner_of(org))
    await stub.ListUsers(listing, metadata=captured)  # the genuine call, as the gateway sent it

    intruder = new_email()
    create = iam_pb2.CreateUserRequest(email=intruder, role="OWNER")
    error = await rpc_error(stub.CreateUser(create, metadata=captured), Code.UNAUTHENTICATED)
    assert error.reason == "wrong_method", error
    # Claiming the method it is sent to breaks the signature instead.
    renamed = tuple((k, IAM + "CreateUser" if k == call_signing.METHOD_KEY else v) for k, v in captured)
    error = await rpc_error(stub.CreateUser(create, metadata=renamed), Code.UNAUTHENTICATED)
    assert error.reason == "context_forged", error
    assert intruder not in await emails_of(stub, org)


async def test_the_same_method_with_another_body_is_refused(plain: Any, make_org: Any) -> None:
    org = await make_org()
    stub = iam_pb2_grpc.IamServiceStub(plain)
    viewer = new_email()
    captured = signed_for("CreateUser", iam_pb2.CreateUserRequest(email=viewer, role="VIEWER"), owner_of(org))

    intruder = new_email()
    escalated = iam_pb2.CreateUserRequest(email=intruder, role="OWNER")
    error = await rpc_error(stub.CreateUser(escalated, metadata=captured), Code.UNAUTHENTICATED)
    assert error.reason == "body_mismatch", error
    # The digest is over the exact bytes received: the signed body plus one unknown field is refused.
    raw = plain.unary_unary(IAM + "ListUsers", response_deserializer=iam_pb2.ListUsersResponse.FromString)
    listing = iam_pb2.ListUsersRequest(limit=5)
    padded = listing.SerializeToString() + b"\x98\x06\x01"  # field 99, varint 1
    error = await rpc_error(
        raw(padded, metadata=signed_for("ListUsers", listing, owner_of(org))), Code.UNAUTHENTICATED
    )
    assert error.reason == "body_mismatch", error
    assert intruder not in await emails_of(stub, org)
    assert viewer not in await emails_of(stub, org), "the captured call itself was never sent"


async def test_the_identical_call_replayed_is_refused(plain: Any, make_org: Any) -> None:
    org = await make_org()
    stub = iam_pb2_grpc.IamServiceStub(plain)
    email = new_email()
    create = iam_pb2.CreateUserRequest(email=email, role="VIEWER")
    captured = signed_for("CreateUser", create, owner_of(org))
    created = await stub.CreateUser(create, metadata=captured)
    assert created.user.email == email

    error = await rpc_error(stub.CreateUser(create, metadata=captured), Code.UNAUTHENTICATED)
    assert error.reason == "context_replayed", error
    # A read replayed is refused just the same.
    listing = iam_pb2.ListUsersRequest(limit=10)
    once = signed_for("ListUsers", listing, owner_of(org))
    await stub.ListUsers(listing, metadata=once)
    error = await rpc_error(stub.ListUsers(listing, metadata=once), Code.UNAUTHENTICATED)
    assert error.reason == "context_replayed", error


async def test_a_stale_or_future_context_is_refused(plain: Any, make_org: Any) -> None:
    """INTERNAL_CONTEXT_MAX_AGE_SECONDS is 30 by default; a few seconds of clock skew ahead are allowed."""
    org = await make_org()
    stub = iam_pb2_grpc.IamServiceStub(plain)
    listing = iam_pb2.ListUsersRequest(limit=10)
    now_ms = int(time.time() * 1000)
    recent = signed_for("ListUsers", listing, owner_of(org), issued_at_ms=now_ms - 20_000)
    assert (await stub.ListUsers(listing, metadata=recent)).users
    for issued_at in (now_ms - 31_000, now_ms - 120_000, now_ms + 60_000):
        old = signed_for("ListUsers", listing, owner_of(org), issued_at_ms=issued_at)
        error = await rpc_error(stub.ListUsers(listing, metadata=old), Code.UNAUTHENTICATED)
        assert error.reason == "context_stale", (issued_at - now_ms, error)


async def test_a_service_key_may_only_act_as_that_service(plain: Any, make_org: Any) -> None:
    """notify's key signs as notify; it cannot speak for a user, for another service, or as OWNER.
    The gateway speaks for users and may not claim a service."""
    org = await make_org()
    stub = iam_pb2_grpc.IamServiceStub(plain)
    listing = iam_pb2.ListUsersRequest(limit=10)

    as_notify = request_context.service_context("notify", org.org_id)
    assert (await stub.ListUsers(listing, metadata=signed_for("ListUsers", listing, as_notify, NOTIFY))).users

    as_jobs = request_context.service_context("jobs", org.org_id)
    as_owner_service = request_context.service_context("notify", org.org_id)
    as_owner_service.role = "OWNER"
    refused = {
        "notify as a user": (owner_of(org), NOTIFY),
        "notify as jobs": (as_jobs, NOTIFY),
        "notify with the OWNER role": (as_owner_service, NOTIFY),
        "gateway as a service": (as_jobs, GATEWAY),
    }
    for label, (ctx, signer) in refused.items():
        metadata = signed_for("ListUsers", listing, ctx, signer)
        error = await rpc_error(stub.ListUsers(listing, metadata=metadata), Code.PERMISSION_DENIED)
        assert error.reason == "principal_not_allowed", (label, error)

    intruder = new_email()
    create = iam_pb2.CreateUserRequest(email=intruder, role="OWNER")
    metadata = signed_for("CreateUser", create, owner_of(org), NOTIFY)
    await rpc_error(stub.CreateUser(create, metadata=metadata), Code.PERMISSION_DENIED)
    assert intruder not in await emails_of(stub, org)


async def test_a_key_the_service_does_not_trust_is_refused(plain: Any, make_org: Any) -> None:
    org = await make_org()
    stub = iam_pb2_grpc.IamServiceStub(plain)
    listing = iam_pb2.ListUsersRequest(limit=10)
    rogue = CallSigner.new("gateway")  # the right name, a key no one listed
    error = await rpc_error(
        stub.ListUsers(listing, metadata=signed_for("ListUsers", listing, owner_of(org), rogue)),
        Code.UNAUTHENTICATED,
    )
    assert error.reason == "context_forged", error
    stranger = CallSigner.new("billing-exporter")
    error = await rpc_error(
        stub.ListUsers(listing, metadata=signed_for("ListUsers", listing, owner_of(org), stranger)),
        Code.UNAUTHENTICATED,
    )
    assert error.reason == "unknown_caller", error
    # No signature at all, or only part of it.
    error = await rpc_error(stub.ListUsers(listing), Code.UNAUTHENTICATED)
    assert error.reason == "context_missing", error
    genuine = signed_for("ListUsers", listing, owner_of(org))
    partial = tuple(item for item in genuine if item[0] != call_signing.SIGNATURE_KEY)
    error = await rpc_error(stub.ListUsers(listing, metadata=partial), Code.UNAUTHENTICATED)
    assert error.reason == "context_missing", error


async def test_a_service_refuses_a_caller_it_does_not_list(jobs: Any) -> None:
    """jobs is called by the gateway only: notify's genuine key, acting as notify, is refused there."""
    request = jobs_pb2.GetHeartbeatRequest()
    method = "/cws.jobs.v1.JobsService/GetHeartbeat"
    async with grpc.aio.insecure_channel(jobs.target) as channel:
        stub = jobs_pb2_grpc.JobsServiceStub(channel)
        anonymous = request_context.RequestContext(
            auth_method=request_context.AuthMethod.Value("AUTH_METHOD_ANONYMOUS")
        )
        from_gateway = call_signing.sign_call(anonymous, GATEWAY, method, request.SerializeToString())
        await stub.GetHeartbeat(request, metadata=from_gateway)

        from_notify = call_signing.sign_call(
            request_context.service_context("notify"), NOTIFY, method, request.SerializeToString()
        )
        error = await rpc_error(stub.GetHeartbeat(request, metadata=from_notify), Code.PERMISSION_DENIED)
        assert error.reason == "caller_not_allowed", error
        # Nor does jobs accept itself: it calls others, no one but the gateway calls it.
        from_jobs = call_signing.sign_call(
            request_context.service_context("jobs"), JOBS, method, request.SerializeToString()
        )
        error = await rpc_error(stub.GetHeartbeat(request, metadata=from_jobs), Code.PERMISSION_DENIED)
        assert error.reason == "caller_not_allowed", error


# --- each process holds only the secrets it uses ----------------------------------------------------

PROD = {"app_env": "prod", "metrics_token": secrets.token_urlsafe(24), "_env_file": None}
SHARED_SECRETS = (
    "AUTH_SECRET_KEY",
    "CLIENT_PORTAL_SECRET",
    "WORKER_PORTAL_SECRET",
    "INTERNAL_CONTEXT_SECRET",
    "AUTH_SECRET_KEY_PREVIOUS",
)


def keys_of(process: str) -> dict[str, str]:
    return {name.lower(): value for name, value in DEV_KEYRING.env_for(process).items()}


@pytest.fixture
def no_shared_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SHARED_SECRETS, "INTERNAL_SIGNING_KEY", "INTERNAL_TRUSTED_KEYS"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("cls", "process"),
    [
        (BookingSettings, "booking"),
        (BillingSettings, "billing"),
        (NotifySettings, "notify"),
        (JobsSettings, "jobs"),
    ],
)
def test_booking_notify_and_jobs_start_in_prod_without_the_jwt_and_portal_secrets(
    cls: type[Any], process: str, no_shared_secrets: None
) -> None:
    settings = cls(**PROD, **keys_of(process))
    assert settings.is_prod
    for field in (
        "auth_secret_key",
        "auth_secret_key_previous",
        "client_portal_secret",
        "worker_portal_secret",
        "internal_context_secret",
    ):
        assert not hasattr(settings, field), f"{process} should not carry {field}"
    accepted = {
        "booking": {"gateway", "notify", "jobs", "billing", "media", "integrations"},
        "billing": {"gateway", "jobs", "integrations"},
        "notify": {"gateway", "jobs", "billing", "media", "integrations"},
        "jobs": {"gateway"},
    }
    assert set(settings.trusted_callers) == accepted[process]


def test_iam_needs_its_secrets_and_trusted_keys_but_no_signing_key(no_shared_secrets: None) -> None:
    strong = {name.lower(): secrets.token_urlsafe(32) for name in SHARED_SECRETS[:3]}
    settings = IamSettings(**PROD, **strong, **keys_of("iam"))
    assert settings.call_signer is None, "iam calls no one, so it holds no private key"
    with pytest.raises(ValidationError, match="AUTH_SECRET_KEY"):
        IamSettings(**PROD, **keys_of("iam"))
    with pytest.raises(ValidationError, match=r"AUTH_SECRET_KEY_PREVIOUS\[1\] is a placeholder"):
        IamSettings(**PROD, **strong, auth_secret_key_previous="change-me", **keys_of("iam"))
    rotating = IamSettings(
        **PROD, **strong, auth_secret_key_previous=secrets.token_urlsafe(32), **keys_of("iam")
    )
    assert len(rotating.auth_secret_keys) == 2
    with pytest.raises(ValidationError, match="INTERNAL_TRUSTED_KEYS is empty"):
        IamSettings(**PROD, **strong)


@pytest.mark.parametrize(
    ("cls", "process"),
    [
        (NotifySettings, "notify"),
        (JobsSettings, "jobs"),
        (BillingSettings, "billing"),
        (MediaSettings, "media"),
        (IntegrationsSettings, "integrations"),
    ],
)
def test_prod_refuses_a_caller_without_its_signing_key(
    cls: type[Any], process: str, no_shared_secrets: None
) -> None:
    keys = keys_of(process)
    with pytest.raises(ValidationError, match="INTERNAL_SIGNING_KEY is required"):
        cls(**PROD, internal_trusted_keys=keys["internal_trusted_keys"])
    with pytest.raises(ValidationError, match="INTERNAL_TRUSTED_KEYS is empty"):
        cls(**PROD, internal_signing_key=keys["internal_signing_key"])


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_a_malformed_key_is_refused_everywhere_without_repeating_it(
    env: str, no_shared_secrets: None
) -> None:
    almost = base64.b64encode(base64.b64decode(DEV_KEYRING.private["jobs"])[:31]).decode()  # cut short
    with pytest.raises(ValidationError) as refused:
        JobsSettings(**{**PROD, "app_env": env}, internal_signing_key=almost)
    assert "INTERNAL_SIGNING_KEY must be base64" in str(refused.value)
    assert almost[:12] not in str(refused.value), "the error must not print the key"
    with pytest.raises(ValidationError, match="INTERNAL_TRUSTED_KEYS"):
        JobsSettings(**{**PROD, "app_env": env}, internal_trusted_keys="gateway:not-a-key")


# --- compose and Kubernetes hand each process the same, and only that ------------------------------

ROOT = Path(__file__).resolve().parents[1]
TOKEN_SECRETS = {"gateway": GatewaySettings, "iam": IamSettings}
# Third-party secrets that only one process may hold (compose blanks them for every other container).
PROVIDER_SECRETS = {
    "billing": ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"),
    "media": (
        "PHOTO_TOKEN_SECRET",
        "R2_ACCESS_KEY",
        "R2_SECRET_KEY",
        "CF_IMAGES_API_TOKEN",
        "CF_IMAGES_SIGNING_KEY",
    ),
    "integrations": (
        "INTEGRATIONS_TOKEN_KEY",
        "INTEGRATIONS_TOKEN_OLD_KEYS",
        "GOOGLE_OAUTH_CLIENT_SECRET",
        "QUICKBOOKS_OAUTH_CLIENT_SECRET",
    ),
}
PROCESSES = ("gateway", "iam", "booking", "billing", "media", "notify", "jobs", "integrations")


def call_secrets_of(process: str) -> dict[str, str]:
    """What `process` reads (name in its env) from which deployment secret: its own key and trusted list
    (per process, hence prefixed), and the token secrets its settings check."""
    wanted = {name: f"{process.upper()}_{name}" for name in DEV_KEYRING.env_for(process)}
    settings = TOKEN_SECRETS.get(process)
    if settings is not None:
        # With an earlier AUTH_SECRET_KEY, so AUTH_SECRET_KEY_PREVIOUS is among the secrets checked
        # (each earlier key is checked as AUTH_SECRET_KEY_PREVIOUS[n]; the setting is the one variable).
        fields = settings(  # type: ignore[call-arg]
            _env_file=None, app_env="test", auth_secret_key_previous="earlier-key"
        ).secrets_to_check()
        wanted.update({name.partition("[")[0]: name.partition("[")[0] for name in fields})
    wanted.update({name: name for name in PROVIDER_SECRETS.get(process, ())})
    return wanted


def test_compose_gives_each_process_only_its_call_secrets() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    blanked = set(compose["x-no-call-secrets"])
    for process in (*PROCESSES, "migrate", "streams"):
        env = compose["services"][process]["environment"]
        wanted = call_secrets_of(process) if process not in ("migrate", "streams") else {}
        assert blanked <= set(env), f"{process} must blank every call secret .env holds"
        given = {name: value for name, value in env.items() if name in blanked and value}
        assert given == {name: f"${{{source}:-}}" for name, source in wanted.items()}, process


def test_kubernetes_gives_each_process_only_its_call_secrets() -> None:
    k8s = ROOT / "deploy" / "k8s"
    secret = yaml.safe_load((k8s / "secret.example.yaml").read_text())["stringData"]
    known = {name for process in PROCESSES for name in call_secrets_of(process)}
    for process in PROCESSES:
        deployment = next(yaml.safe_load_all((k8s / f"{process}.yaml").read_text()))
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        given = {
            item["name"]: item["valueFrom"]["secretKeyRef"]["key"]
            for item in container["env"]
            if item["name"] in known | {"INTERNAL_CONTEXT_SECRET"}
        }
        assert given == call_secrets_of(process), process
        assert set(given.values()) <= set(secret), f"{process} maps keys secret.example.yaml does not name"
    job = yaml.safe_load((k8s / "migrate-job.yaml").read_text())
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    assert not {item["name"] for item in migrate["env"]} & (known | {"INTERNAL_CONTEXT_SECRET"})
