"""Settings of the gateway and of every process (libs.common.settings): prod fail-fast rules and parsing.

Kept with the gateway tests because they exercise GatewaySettings, which libs/common may not import."""

from __future__ import annotations

import ipaddress
import os
import secrets
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from libs.common.internal_keys import new_private_key, private_key_text
from libs.common.settings import CommonSettings, split_csv, sqlalchemy_url

# The gateway's shared secrets (the portal secrets are iam's alone: the gateway asks iam to verify
# portal tokens; internal calls are signed with INTERNAL_SIGNING_KEY, checked below).
SECRET_FIELDS = {"auth_secret_key": "AUTH_SECRET_KEY"}
# Everything these settings read that a developer's shell might happen to export.
ENV_NAMES = [
    *SECRET_FIELDS.values(),
    "AUTH_SECRET_KEY_PREVIOUS",
    "INTERNAL_SIGNING_KEY",
    "INTERNAL_TRUSTED_KEYS",
    "APP_ENV",
    "METRICS_ENABLED",
    "METRICS_TOKEN",
    "STRICT_CORS",
    "CORS_ORIGINS",
    "CORS_ALLOW_CREDENTIALS",
    "ADMIN_IP_ALLOWLIST_CIDRS",
    "TRUSTED_PROXY_CIDRS",
    "TRUSTED_PROXY_IPS",
    "LEGACY_BASIC_AUTH_ENABLED",
    "TESTING",
    "OWNER_BASIC_USERNAME",
    "OWNER_BASIC_PASSWORD",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def strong() -> dict[str, Any]:
    """What a correct production configuration sets."""
    return {field: secrets.token_urlsafe(32) for field in SECRET_FIELDS} | {
        "metrics_token": secrets.token_urlsafe(24),
        "internal_signing_key": private_key_text(new_private_key()),
    }


def build(cls: type[CommonSettings], **values: Any) -> Any:
    """Settings as a dev workstation has them, unless the test says otherwise (APP_ENV has no default)."""
    if "APP_ENV" not in os.environ:
        values = {"app_env": "dev", **values}
    return cls(_env_file=None, **values)  # type: ignore[call-arg]


def prod_error(cls: type[CommonSettings], **values: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        build(cls, **values)
    return str(raised.value)


# --- baseline -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [CommonSettings, GatewaySettings])
def test_prod_with_real_secrets_starts(cls: type[CommonSettings]) -> None:
    settings = build(cls, app_env="prod", **strong())
    assert settings.is_prod
    assert not settings.is_dev_or_test


@pytest.mark.parametrize("cls", [CommonSettings, GatewaySettings])
def test_a_deployment_that_forgets_app_env_does_not_start_as_dev(cls: type[CommonSettings]) -> None:
    with pytest.raises(ValidationError, match="APP_ENV is not set"):
        cls(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", [CommonSettings, GatewaySettings])
def test_dev_defaults_start_with_placeholders(cls: type[CommonSettings]) -> None:
    settings = build(cls)
    assert settings.app_env == "dev"
    assert settings.call_signer is None, "no internal key unless given: tools/processes.py gives one per run"


def test_unknown_app_env_refused() -> None:
    with pytest.raises(ValidationError):
        build(CommonSettings, app_env="staging")


def test_app_env_is_case_insensitive_and_production_counts_as_prod() -> None:
    assert build(CommonSettings, app_env="PROD", **strong()).is_prod
    assert build(CommonSettings, app_env="production", **strong()).is_prod
    assert "refusing to start" in prod_error(CommonSettings, app_env="Production")


# --- placeholder secrets --------------------------------------------------------------------


def test_prod_with_default_secrets_refused() -> None:
    message = prod_error(GatewaySettings, app_env="prod", metrics_token=secrets.token_urlsafe(24))
    for name in (*SECRET_FIELDS.values(), "INTERNAL_SIGNING_KEY is required"):
        assert name in message


def test_prod_gateway_needs_its_signing_key_and_no_trusted_keys() -> None:
    """The gateway calls every service and serves none over gRPC; the migration process (plain
    CommonSettings) does neither, so it needs neither key."""
    without_key = strong() | {"internal_signing_key": ""}
    assert "INTERNAL_SIGNING_KEY is required" in prod_error(GatewaySettings, app_env="prod", **without_key)
    settings = build(GatewaySettings, app_env="prod", **strong())
    assert settings.call_signer is not None and settings.call_signer.name == "gateway"
    assert settings.internal_trusted_keys == []
    assert build(CommonSettings, app_env="prod", metrics_token="m" * 24).is_prod


@pytest.mark.parametrize("cls", [GatewaySettings])
@pytest.mark.parametrize("field", list(SECRET_FIELDS))
@pytest.mark.parametrize(
    "value", ["change-me", "CHANGEME", "  secret  ", "", "dev-internal-secret", "x" * 31]
)
def test_prod_with_one_placeholder_or_short_secret_refused(
    cls: type[CommonSettings], field: str, value: str
) -> None:
    message = prod_error(cls, app_env="prod", **(strong() | {field: value}))
    assert SECRET_FIELDS[field] in message
    others = set(SECRET_FIELDS.values()) - {SECRET_FIELDS[field]}
    assert not any(name in message for name in others), "only the bad secret is named"


def test_prod_placeholder_secrets_from_environment_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for field, name in SECRET_FIELDS.items():
        monkeypatch.setenv(name, strong()[field])
    monkeypatch.setenv("INTERNAL_SIGNING_KEY", strong()["internal_signing_key"])
    monkeypatch.setenv("APP_ENV", "prod")
    monkeypatch.setenv("METRICS_TOKEN", "a-metrics-token")
    build(GatewaySettings)
    monkeypatch.setenv("AUTH_SECRET_KEY", "dev-auth-secret")
    with pytest.raises(ValidationError, match="AUTH_SECRET_KEY"):
        build(GatewaySettings)


@pytest.mark.parametrize("env", ["dev", "test"])
def test_placeholders_allowed_outside_prod(env: str) -> None:
    build(GatewaySettings, app_env=env, auth_secret_key="change-me", metrics_token="")


# --- AUTH_SECRET_KEY_PREVIOUS (rotating AUTH_SECRET_KEY) -------------------------------------


def test_earlier_auth_keys_from_environment_verify_after_the_current_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, older = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    monkeypatch.setenv("AUTH_SECRET_KEY_PREVIOUS", f" {old} ,{older}, ")
    settings = build(GatewaySettings, app_env="prod", **strong())
    assert settings.auth_secret_keys == (settings.auth_secret_key, old, older)
    assert old not in repr(settings) and older not in repr(settings)
    assert build(GatewaySettings).auth_secret_keys == ("dev-auth-secret", old, older)


def test_no_earlier_auth_keys_by_default() -> None:
    settings = build(GatewaySettings, app_env="prod", **strong())
    assert settings.auth_secret_key_previous == []
    assert settings.auth_secret_keys == (settings.auth_secret_key,)


@pytest.mark.parametrize("weak", ["change-me", "dev-auth-secret", "x" * 31])
def test_prod_refuses_a_weak_earlier_auth_key_naming_its_position_not_its_value(weak: str) -> None:
    """A weak earlier key still verifies tokens and opens secrets, so it is held to the same rule."""
    message = prod_error(
        GatewaySettings,
        app_env="prod",
        auth_secret_key_previous=f"{secrets.token_urlsafe(32)},{weak}",
        **strong(),
    )
    assert "AUTH_SECRET_KEY_PREVIOUS[2] is a placeholder or shorter than 32 characters" in message
    assert "AUTH_SECRET_KEY_PREVIOUS[1]" not in message
    assert weak not in message.replace("AUTH_SECRET_KEY", "")


# --- CORS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("origins", ["*", "https://app.example.com,*", '["*"]', ""])
def test_prod_strict_cors_needs_explicit_origins(origins: str) -> None:
    message = prod_error(GatewaySettings, app_env="prod", strict_cors=True, cors_origins=origins, **strong())
    assert "STRICT_CORS" in message


def test_prod_strict_cors_star_from_environment_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRICT_CORS", "true")
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example.com, *")
    with pytest.raises(ValidationError, match="STRICT_CORS"):
        build(GatewaySettings, app_env="prod", **strong())


@pytest.mark.parametrize("origins", ["*", "https://app.example.com,*", '["*"]', " * "])
def test_prod_wildcard_cors_with_credentials_refused(origins: str) -> None:
    """Issue 9 hole 9: credentials (on by default) with a wildcard origin, STRICT_CORS or not."""
    message = prod_error(GatewaySettings, app_env="prod", cors_origins=origins, **strong())
    assert "CORS_ORIGINS contains '*' while CORS_ALLOW_CREDENTIALS is on" in message
    assert "list the exact origins" in message


def test_prod_wildcard_cors_from_environment_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example.com, *")
    with pytest.raises(ValidationError, match="CORS_ALLOW_CREDENTIALS"):
        build(GatewaySettings, app_env="prod", **strong())


def test_prod_wildcard_cors_without_credentials_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "*")
    monkeypatch.setenv("CORS_ALLOW_CREDENTIALS", "false")
    settings = build(GatewaySettings, app_env="prod", **strong())
    assert settings.cors_origins == ["*"] and not settings.cors_allow_credentials


def test_prod_explicit_cors_origins_with_credentials_start() -> None:
    settings = build(GatewaySettings, app_env="prod", cors_origins="https://app.example.com", **strong())
    assert settings.cors_allow_credentials


@pytest.mark.parametrize("env", ["dev", "test"])
def test_wildcard_cors_allowed_outside_prod(env: str) -> None:
    assert build(GatewaySettings, app_env=env, cors_origins="*").cors_origins == ["*"]


def test_prod_strict_cors_with_explicit_origins_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRICT_CORS", "true")
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example.com,https://admin.example.com")
    settings = build(GatewaySettings, app_env="prod", **strong())
    assert settings.cors_origins == ["https://app.example.com", "https://admin.example.com"]


# --- metrics --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [CommonSettings, GatewaySettings])
def test_prod_metrics_without_token_refused(cls: type[CommonSettings]) -> None:
    message = prod_error(cls, app_env="prod", **(strong() | {"metrics_token": ""}))
    assert "METRICS_TOKEN" in message


def test_prod_metrics_disabled_needs_no_token() -> None:
    settings = build(
        GatewaySettings, app_env="prod", metrics_enabled=False, **(strong() | {"metrics_token": ""})
    )
    assert not settings.metrics_enabled


# --- CIDRs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["dev", "test", "prod"])
@pytest.mark.parametrize(
    "cidrs",
    ["10.0.0.0/33", "not-a-cidr", "10.0.0.0/8,300.1.2.3", "10.0.0.0/8;192.168.0.0/16", '["10.0.0.0/8", "x"]'],
)
def test_unparsable_admin_cidrs_refused_in_every_env(env: str, cidrs: str) -> None:
    values = strong() if env == "prod" else {}
    with pytest.raises(ValidationError, match="ADMIN_IP_ALLOWLIST_CIDRS"):
        build(GatewaySettings, app_env=env, admin_ip_allowlist_cidrs=cidrs, **values)


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_unparsable_admin_cidrs_from_environment_refused(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv("ADMIN_IP_ALLOWLIST_CIDRS", "10.0.0.0/8,192.168.1.0/24x")
    values = strong() if env == "prod" else {}
    with pytest.raises(ValidationError, match="ADMIN_IP_ALLOWLIST_CIDRS"):
        build(GatewaySettings, app_env=env, **values)


def test_unparsable_proxy_settings_refused() -> None:
    with pytest.raises(ValidationError, match="TRUSTED_PROXY_CIDRS"):
        build(GatewaySettings, trusted_proxy_cidrs="10.0.0.0/40")
    with pytest.raises(ValidationError, match="TRUSTED_PROXY_IPS"):
        build(GatewaySettings, trusted_proxy_ips="10.0.0.0/8")


EXPECTED_NETWORKS = [
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("192.168.1.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
]


@pytest.mark.parametrize(
    "raw",
    [
        "10.0.0.0/8,192.168.1.0/24,2001:db8::/32",
        " 10.0.0.0/8 , 192.168.1.0/24 ,, 2001:db8::/32 ",
        '["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"]',
        '  ["10.0.0.0/8","192.168.1.0/24", "2001:db8::/32"]',
    ],
    ids=["csv", "csv-spaces", "json", "json-compact"],
)
def test_admin_cidrs_comma_separated_and_json_list_from_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("ADMIN_IP_ALLOWLIST_CIDRS", raw)
    settings = build(GatewaySettings, app_env="prod", **strong())
    assert settings.admin_networks == EXPECTED_NETWORKS


def test_admin_cidrs_as_keyword_list_and_host_bits() -> None:
    settings = build(GatewaySettings, admin_ip_allowlist_cidrs=["10.1.2.3/8", "192.168.1.7"])
    assert settings.admin_networks == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
    ]


@pytest.mark.parametrize("raw", ["", "   ", "[]"])
def test_empty_admin_cidrs(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("ADMIN_IP_ALLOWLIST_CIDRS", raw)
    assert build(GatewaySettings).admin_networks == []


def test_split_csv() -> None:
    assert split_csv(None) == []
    assert split_csv("a, b,,c ") == ["a", "b", "c"]
    assert split_csv('["a", " b ", ""]') == ["a", "b"]
    assert split_csv(("a", " ")) == ["a"]


# --- legacy Basic Auth and test-only switches -----------------------------------------------


def test_legacy_basic_auth_defaults() -> None:
    assert build(GatewaySettings, app_env="prod", **strong()).basic_auth_enabled is False
    assert build(GatewaySettings, app_env="dev").basic_auth_enabled is True
    assert build(GatewaySettings, app_env="test").basic_auth_enabled is True


def test_legacy_basic_auth_explicit_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGACY_BASIC_AUTH_ENABLED", "true")
    assert build(GatewaySettings, app_env="prod", **strong()).basic_auth_enabled is True
    monkeypatch.setenv("LEGACY_BASIC_AUTH_ENABLED", "false")
    assert build(GatewaySettings, app_env="dev").basic_auth_enabled is False


def test_prod_basic_auth_with_weak_password_refused() -> None:
    message = prod_error(
        GatewaySettings,
        app_env="prod",
        legacy_basic_auth_enabled=True,
        owner_basic_username="owner",
        owner_basic_password="short",
        **strong(),
    )
    assert "OWNER_BASIC_PASSWORD" in message
    settings = build(
        GatewaySettings,
        app_env="prod",
        legacy_basic_auth_enabled=True,
        owner_basic_username="owner",
        owner_basic_password=secrets.token_urlsafe(16),
        **strong(),
    )
    assert [c.role for c in settings.basic_credentials] == ["OWNER"]


def test_basic_credentials_empty_when_disabled() -> None:
    settings = build(
        GatewaySettings,
        app_env="prod",
        owner_basic_username="owner",
        owner_basic_password=secrets.token_urlsafe(16),
        **strong(),
    )
    assert settings.basic_credentials == ()


@pytest.mark.parametrize(("env", "allowed"), [("dev", True), ("test", True), ("prod", False)])
def test_x_test_org_header_only_outside_prod(env: str, allowed: bool) -> None:
    values = strong() if env == "prod" else {}
    assert build(GatewaySettings, app_env=env, **values).test_org_header_allowed is allowed


def test_testing_switch_refused_in_prod() -> None:
    assert "TESTING" in prod_error(GatewaySettings, app_env="prod", testing=True, **strong())
    assert build(GatewaySettings, app_env="dev", testing=True).test_org_header_allowed


# --- URLs -----------------------------------------------------------------------------------


def test_sqlalchemy_url() -> None:
    assert sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sqlalchemy_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(ValueError):
        sqlalchemy_url("mysql://u@h/db")
