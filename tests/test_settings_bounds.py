"""Numeric settings that would break the suite quietly are refused at start, in every environment: a
lockout of 0 failures locks every account on its next login, a timeout of 0 fails every send, 0 gateway
workers starts none. Each refusal names the setting."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from libs.common.settings import CommonSettings
from services.iam.settings import IamSettings
from services.notify.settings import NotifySettings

REFUSED = [
    (IamSettings, "login_lockout_failures", 0),
    (IamSettings, "login_throttle_after_failures", 0),
    (IamSettings, "login_throttle_max_seconds", -1),
    (IamSettings, "break_glass_max_ttl_minutes", 0),
    # The gateway refuses ttl_minutes over 1440 before iam sees it: a higher maximum would do nothing.
    (IamSettings, "break_glass_max_ttl_minutes", 1441),
    (NotifySettings, "smtp_timeout_seconds", 0),
    (NotifySettings, "export_webhook_timeout_seconds", -5),
    (GatewaySettings, "gateway_workers", 0),
]


def build(cls: type[CommonSettings], **values: Any) -> CommonSettings:
    return cls(_env_file=None, app_env="dev", **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(("cls", "name", "value"), REFUSED)
def test_a_value_that_would_break_the_suite_is_refused_naming_the_setting(
    cls: type[CommonSettings], name: str, value: Any
) -> None:
    with pytest.raises(ValidationError) as refused:
        build(cls, **{name: value})
    assert name in str(refused.value)


@pytest.mark.parametrize(("cls", "name", "value"), REFUSED)
def test_the_same_setting_from_the_environment_is_refused(
    cls: type[CommonSettings], name: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name.upper(), str(value))
    with pytest.raises(ValidationError):
        build(cls)


def test_the_defaults_and_the_edges_start() -> None:
    iam = build(IamSettings, login_lockout_failures=1, break_glass_max_ttl_minutes=1440)
    assert isinstance(iam, IamSettings) and iam.login_lockout_failures == 1
    defaults = build(IamSettings)
    assert isinstance(defaults, IamSettings)
    assert (defaults.login_throttle_after_failures, defaults.login_lockout_failures) == (5, 100)
    assert build(NotifySettings, smtp_timeout_seconds=0.5).smtp_timeout_seconds == 0.5  # type: ignore[attr-defined]
    assert build(GatewaySettings).gateway_workers == 1  # type: ignore[attr-defined]
