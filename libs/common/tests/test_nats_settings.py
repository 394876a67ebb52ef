"""A process's NATS user in production: a placeholder or short NATS_PASSWORD is refused at start-up,
for the suite's processes (CommonSettings) and for the stream-making one-shot (StreamSettings)."""

from __future__ import annotations

from typing import Any

import pytest

from libs.common.settings import CommonSettings
from libs.common.streams import StreamSettings

PROD: dict[str, Any] = {"_env_file": None, "app_env": "prod", "metrics_token": "m" * 32}


@pytest.mark.parametrize("password", ["", "change-me", "short-password"])
def test_prod_refuses_a_nats_user_with_a_weak_password(password: str) -> None:
    with pytest.raises(ValueError, match="NATS_PASSWORD \\(of NATS user booking\\)"):
        CommonSettings(**PROD, nats_user="booking", nats_password=password)


def test_prod_starts_with_a_strong_nats_password_and_hides_it() -> None:
    settings = CommonSettings(**PROD, nats_user="booking", nats_password="p" * 32)
    assert settings.nats_user == "booking"
    assert "p" * 32 not in repr(settings)


def test_without_a_nats_user_the_migrations_need_no_nats_password() -> None:
    # `python -m libs.common.migrate` uses CommonSettings and never connects to NATS.
    assert CommonSettings(**PROD).nats_password == ""


def test_outside_prod_any_password_is_accepted() -> None:
    assert (
        CommonSettings(_env_file=None, app_env="test", nats_user="iam", nats_password="x").nats_user == "iam"
    )


def test_the_stream_command_refuses_a_weak_admin_password_in_prod() -> None:
    assert StreamSettings(_env_file=None, app_env="prod", nats_password="short").problems()
    assert not StreamSettings(_env_file=None, app_env="prod", nats_password="a" * 32).problems()
    assert not StreamSettings(_env_file=None, app_env="dev", nats_password="").problems()
