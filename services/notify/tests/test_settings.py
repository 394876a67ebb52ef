"""Notify's settings: what production refuses to start with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.notify.settings import NotifySettings
from tools.processes import DEV_KEYRING


def prod(**values: Any) -> NotifySettings:
    # Notify's own key and its callers' public keys; no JWT or portal secret (tests/test_internal_calls.py).
    keys = {name.lower(): value for name, value in DEV_KEYRING.env_for("notify").items()}
    return NotifySettings(_env_file=None, app_env="prod", metrics_token="t" * 24, **keys, **values)  # type: ignore[call-arg]


def test_prod_starts_with_exports_off_or_a_complete_webhook_or_sheet(tmp_path: Path) -> None:
    assert prod().export_mode == "off"
    webhook = prod(
        export_mode="webhook",
        export_webhook_url="https://hooks.example.com/x",
        export_webhook_secret="whsec_x",
    )
    assert webhook.export_mode == "webhook"
    key = tmp_path / "key.json"
    key.write_text("{}")
    sheets = prod(export_mode="sheets", sheets_spreadsheet_id="1abc", google_service_account_file=str(key))
    assert sheets.export_mode == "sheets"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"export_mode": "sheets"}, "EXPORT_MODE=sheets requires SHEETS_SPREADSHEET_ID"),
        (
            {
                "export_mode": "sheets",
                "sheets_spreadsheet_id": "1abc",
                "google_service_account_file": "/nonexistent.json",
            },
            "EXPORT_MODE=sheets requires GOOGLE_SERVICE_ACCOUNT_FILE, a readable key file",
        ),
        (
            {"export_mode": "webhook"},
            "EXPORT_MODE=webhook requires EXPORT_WEBHOOK_URL and EXPORT_WEBHOOK_SECRET",
        ),
        ({"email_mode": "sendgrid"}, "EMAIL_MODE=sendgrid requires SENDGRID_API_KEY"),
    ],
)
def test_prod_refuses_what_would_lose_messages(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        prod(**values)
    assert message in str(raised.value)


def test_unknown_modes_refused_in_every_env() -> None:
    with pytest.raises(ValidationError, match="EXPORT_MODE must be off, webhook or sheets"):
        NotifySettings(_env_file=None, export_mode="csv")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="EMAIL_MODE must be off, smtp or sendgrid"):
        NotifySettings(_env_file=None, email_mode="postfix")  # type: ignore[call-arg]
