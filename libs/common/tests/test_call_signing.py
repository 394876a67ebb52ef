"""Signing and verifying internal calls (libs/common/call_signing.py) and their keys
(libs/common/internal_keys.py), in this process. The same attacks against real services are in
tests/test_internal_calls.py."""

from __future__ import annotations

import base64
import time
import uuid

import pytest

from libs.common import call_signing
from libs.common.call_signing import CallVerifier, ReplayGuard, body_digest, sign_call
from libs.common.context import AuthMethod, RequestContext, service_context
from libs.common.errors import PermissionDenied, Unauthenticated
from libs.common.internal_keys import (
    CallSigner,
    Keyring,
    callers_of,
    load_private_key,
    load_trusted_keys,
    main,
    public_key_text,
)

METHOD = "/cws.iam.v1.IamService/ListUsers"
BODY = b"\x08\x0a"
GATEWAY = CallSigner.new("gateway")


def _ctx(**fields: object) -> RequestContext:
    defaults: dict[str, object] = {
        "org_id": str(uuid.uuid4()),
        "principal_id": str(uuid.uuid4()),
        "role": "ADMIN",
        "auth_method": AuthMethod.Value("AUTH_METHOD_JWT"),
        "request_id": "req-1",
    }
    defaults.update(fields)
    return RequestContext(**defaults)  # type: ignore[arg-type]


def verifier(*signers: CallSigner, max_age: float = 30) -> CallVerifier:
    trusted: dict[str, tuple] = {}
    for signer in signers or (GATEWAY,):
        trusted[signer.name] = (*trusted.get(signer.name, ()), signer.key.public_key())
    return CallVerifier(trusted, max_age)


def refused(check: CallVerifier, metadata: object, method: str = METHOD, body: bytes = BODY) -> str:
    with pytest.raises((Unauthenticated, PermissionDenied)) as raised:
        check.verify(metadata, method, body_digest(body))  # type: ignore[arg-type]
    return raised.value.code


def test_round_trip_stamps_a_copy_with_time_and_nonce() -> None:
    ctx = _ctx()
    metadata = sign_call(ctx, GATEWAY, METHOD, BODY)
    assert dict(metadata).keys() == {
        call_signing.CONTEXT_KEY,
        call_signing.CALLER_KEY,
        call_signing.METHOD_KEY,
        call_signing.BODY_KEY,
        call_signing.SIGNATURE_KEY,
    }
    got = verifier().verify((("user-agent", "x"), *metadata), METHOD, body_digest(BODY))
    assert (got.org_id, got.principal_id, got.role) == (ctx.org_id, ctx.principal_id, "ADMIN")
    assert abs(got.issued_at_unix_ms - time.time() * 1000) < 5000 and len(got.nonce) == 16
    assert ctx.issued_at_unix_ms == 0 and not ctx.nonce, "signing must not stamp the caller's message"
    # Text values may arrive as bytes (grpc hands some metadata over that way).
    as_bytes = tuple(
        (k, v.encode() if isinstance(v, str) else v) for k, v in sign_call(ctx, GATEWAY, METHOD, BODY)
    )
    assert verifier().verify(as_bytes, METHOD, body_digest(BODY)).org_id == ctx.org_id


@pytest.mark.parametrize("metadata", [None, (), (("user-agent", "x"),)])
def test_missing_context_refused(metadata: object) -> None:
    assert refused(verifier(), metadata) == "context_missing"


def test_every_part_is_bound() -> None:
    check = verifier()
    metadata = dict(sign_call(_ctx(role="VIEWER"), GATEWAY, METHOD, BODY))
    assert (
        refused(check, tuple(metadata.items()), method="/cws.iam.v1.IamService/CreateUser") == "wrong_method"
    )
    assert refused(check, tuple(metadata.items()), body=BODY + b"\x10\x01") == "body_mismatch"
    escalated = RequestContext.FromString(metadata[call_signing.CONTEXT_KEY])
    escalated.role = "OWNER"
    altered = {**metadata, call_signing.CONTEXT_KEY: escalated.SerializeToString()}
    assert refused(check, tuple(altered.items())) == "context_forged"
    other_digest = {**metadata, call_signing.BODY_KEY: body_digest(b"").hex()}
    assert refused(check, tuple(other_digest.items()), body=b"") == "context_forged"
    renamed = {**metadata, call_signing.CALLER_KEY: "notify"}
    assert refused(verifier(GATEWAY, CallSigner.new("notify")), tuple(renamed.items())) == "context_forged"
    garbled = {**metadata, call_signing.SIGNATURE_KEY: "not base64!"}
    assert refused(check, tuple(garbled.items())) == "context_forged"
    partial = {k: v for k, v in metadata.items() if k != call_signing.SIGNATURE_KEY}
    assert refused(check, tuple(partial.items())) == "context_missing"


def test_callers_and_keys() -> None:
    assert refused(verifier(), sign_call(_ctx(), CallSigner.new("gateway"), METHOD, BODY)) == "context_forged"
    assert (
        refused(verifier(), sign_call(_ctx(), CallSigner.new("stranger"), METHOD, BODY)) == "unknown_caller"
    )
    notify = CallSigner.new("notify")
    metadata = sign_call(service_context("notify"), notify, METHOD, BODY)
    assert refused(verifier(), metadata) == "caller_not_allowed", "a suite process this service does not list"


def test_rotation_accepts_either_listed_key() -> None:
    old, new = GATEWAY, CallSigner.new("gateway")
    entries = [f"gateway:{old.public_text}", f"gateway:{new.public_text}"]
    check = CallVerifier(load_trusted_keys(entries), 30)
    for signer in (old, new):
        assert check.verify(sign_call(_ctx(), signer, METHOD, BODY), METHOD, body_digest(BODY))
    # Once the old key is removed, it is refused.
    after = CallVerifier(load_trusted_keys(entries[1:]), 30)
    assert refused(after, sign_call(_ctx(), old, METHOD, BODY)) == "context_forged"


def test_stale_future_and_replayed_refused() -> None:
    check = verifier(max_age=30)
    now_ms = int(time.time() * 1000)
    assert check.verify(
        sign_call(_ctx(), GATEWAY, METHOD, BODY, issued_at_ms=now_ms - 29_000), METHOD, body_digest(BODY)
    )
    assert check.verify(
        sign_call(_ctx(), GATEWAY, METHOD, BODY, issued_at_ms=now_ms + 4_000), METHOD, body_digest(BODY)
    )
    for issued in (now_ms - 31_000, now_ms + 6_000, 0):
        assert (
            refused(check, sign_call(_ctx(), GATEWAY, METHOD, BODY, issued_at_ms=issued)) == "context_stale"
        )
    once = sign_call(_ctx(), GATEWAY, METHOD, BODY)
    check.verify(once, METHOD, body_digest(BODY))
    assert refused(check, once) == "context_replayed"
    assert refused(check, sign_call(_ctx(), GATEWAY, METHOD, BODY, nonce=b"")) == "context_invalid"


def test_principal_rule() -> None:
    notify = CallSigner.new("notify")
    check = verifier(GATEWAY, notify)
    assert check.verify(
        sign_call(service_context("notify", "o"), notify, METHOD, BODY), METHOD, body_digest(BODY)
    )
    owner_service = service_context("notify")
    owner_service.role = "OWNER"
    for ctx, signer in (
        (_ctx(role="OWNER"), notify),
        (service_context("jobs"), notify),
        (owner_service, notify),
        (service_context("jobs"), GATEWAY),
        (_ctx(principal_id="service:jobs"), GATEWAY),
    ):
        assert refused(check, sign_call(ctx, signer, METHOD, BODY)) == "principal_not_allowed"


def test_replay_guard_forgets_after_its_window_and_stays_bounded() -> None:
    guard = ReplayGuard(window_seconds=10, max_entries=3)
    assert guard.first_use(b"a", now=0) and not guard.first_use(b"a", now=9.9)
    assert guard.first_use(b"a", now=10.1), "past the window the age check refuses it anyway"
    for n, key in enumerate((b"b", b"c", b"d")):
        assert guard.first_use(key, now=11 + n)
    assert len(guard) <= 3


def test_keys_parse_and_refuse_without_echoing() -> None:
    signer = CallSigner.new("jobs")
    text = base64.b64encode(signer.key.private_bytes_raw()).decode()
    assert public_key_text(load_private_key(text)) == signer.public_text
    assert (
        public_key_text(load_private_key(text.rstrip("=").replace("+", "-").replace("/", "_")))
        == signer.public_text
    )
    for bad in ("", "x", text[:-8], base64.b64encode(b"k" * 33).decode()):
        with pytest.raises(ValueError) as raised:
            load_private_key(bad)
        assert len(bad) < 8 or bad[:10] not in str(raised.value), "a secret is never repeated"
    for bad_entry in ("gateway", "Gateway:" + signer.public_text, "gateway:abc", ":" + signer.public_text):
        with pytest.raises(ValueError, match="INTERNAL_TRUSTED_KEYS"):
            load_trusted_keys([bad_entry])


def test_keyring_gives_each_process_only_what_it_uses() -> None:
    keyring = Keyring.generate()
    assert callers_of("iam") == ("gateway", "notify", "jobs", "billing", "integrations")
    assert callers_of("jobs") == ("gateway",)
    assert callers_of("integrations") == ("gateway", "jobs")
    assert keyring.env_for("gateway").keys() == {"INTERNAL_SIGNING_KEY"}
    assert keyring.env_for("iam").keys() == {"INTERNAL_TRUSTED_KEYS"}
    assert keyring.env_for("booking").keys() == {"INTERNAL_TRUSTED_KEYS"}
    assert keyring.env_for("notify").keys() == {"INTERNAL_SIGNING_KEY", "INTERNAL_TRUSTED_KEYS"}
    trusted = load_trusted_keys(keyring.env_for("notify")["INTERNAL_TRUSTED_KEYS"].split(","))
    assert set(trusted) == {"gateway", "jobs", "billing", "media", "integrations"}
    assert keyring.env_for("billing").keys() == {"INTERNAL_SIGNING_KEY", "INTERNAL_TRUSTED_KEYS"}
    trusted = load_trusted_keys(keyring.env_for("booking")["INTERNAL_TRUSTED_KEYS"].split(","))
    assert set(trusted) == {"gateway", "notify", "jobs", "billing", "media", "integrations"}
    # Media is called by billing too (the usage report's stored bytes).
    trusted = load_trusted_keys(keyring.env_for("media")["INTERNAL_TRUSTED_KEYS"].split(","))
    assert set(trusted) == {"gateway", "jobs", "billing"}
    # Integrations calls booking, billing, iam and notify for its syncs and holds a key of its own.
    assert keyring.env_for("integrations").keys() == {"INTERNAL_SIGNING_KEY", "INTERNAL_TRUSTED_KEYS"}
    kept = Keyring.generate({"jobs": keyring.private["jobs"]})
    assert (
        kept.private["jobs"] == keyring.private["jobs"]
        and kept.private["gateway"] != keyring.private["gateway"]
    )


def test_operator_command_prints_a_key_and_its_public_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "gateway"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    private = lines[0].removeprefix("INTERNAL_SIGNING_KEY=")
    assert lines[1] == f"gateway:{public_key_text(load_private_key(private))}"
    assert main(["new", "Not A Name"]) == 2
    assert main(["suite"]) == 0
    out = capsys.readouterr().out
    # gateway, notify, jobs, billing, media and integrations sign; iam, booking, billing, media, notify,
    # jobs and integrations trust.
    assert out.count("INTERNAL_SIGNING_KEY=") == 6 and out.count("INTERNAL_TRUSTED_KEYS=") == 7
