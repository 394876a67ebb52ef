"""The Sheets export adapter against real local HTTP servers standing in for Google: one for the OAuth
token endpoint (the service account key's token_uri) and one for the Sheets API. The token exchange is
google-auth's own (a JWT signed with the key, checked here with the key's public half)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from services.notify.adapters.base import Outbound, PermanentFailure, TransientFailure
from services.notify.adapters.sheets import SheetsAdapter, sheet_row
from services.notify.settings import NotifySettings
from services.notify.tests.own_notify import SPREADSHEET, GoogleStandIn
from tools.devstack import free_port

APPEND_PATH = f"/v4/spreadsheets/{SPREADSHEET}/values/Leads%21A1:append"


@pytest.fixture
def google() -> Any:
    server = GoogleStandIn()
    yield server
    server.stop()


@pytest.fixture
def key_file(tmp_path: Path, google: GoogleStandIn) -> Path:
    return google.write_key(tmp_path)


def adapter(google: GoogleStandIn, key_file: Path | str, **values: Any) -> SheetsAdapter:
    settings = NotifySettings(  # type: ignore[call-arg]
        _env_file=None,
        export_mode="sheets",
        sheets_spreadsheet_id=SPREADSHEET,
        google_service_account_file=str(key_file),
        sheets_api_url=google.sheets.url,
        **values,
    )
    return SheetsAdapter(settings)


def lead_export(**data: Any) -> Outbound:
    payload = {
        "type": "lead.created",
        "data": {
            "lead_id": "lead-1",
            "name": "Ana Client",
            "email": "ana@example.com",
            "postal_code": "H2X 1Y4",
            "cleaning_type": "deep",
            "total_before_tax_cents": 18950,
            "created_at": "2026-11-22T09:00:00Z",
            "org_id": "org-1",
            **data,
        },
    }
    return Outbound(uuid.uuid4(), uuid.uuid4(), "export", "sheets", payload)


async def test_an_export_is_appended_as_one_row_with_a_service_account_token(
    google: GoogleStandIn, key_file: Path
) -> None:
    sheets, export = adapter(google, key_file), lead_export()
    try:
        await sheets.send(export)
        await sheets.send(lead_export(lead_id="lead-2"))
    finally:
        await sheets.close()
    first, second = google.sheets.requests
    assert urlsplit(first.path).path == APPEND_PATH
    assert parse_qs(urlsplit(first.path).query) == {
        "valueInputOption": ["RAW"],
        "insertDataOption": ["INSERT_ROWS"],
    }
    assert first.headers["authorization"] == "Bearer token-1"
    assert first.json() == {
        "values": [
            [
                str(export.id),
                "lead.created",
                "2026-11-22T09:00:00Z",
                "lead-1",
                "Ana Client",
                "ana@example.com",
                "H2X 1Y4",
                "deep",
                18950,
                "org-1",
            ]
        ]
    }
    # The token is reused until it nears expiry: one exchange for both rows.
    assert google.tokens_issued == 1
    assert second.headers["authorization"] == "Bearer token-1"
    assert second.json()["values"][0][3] == "lead-2"


def test_other_export_types_keep_alphabetical_columns_and_json_for_structures() -> None:
    row = Outbound(
        uuid.uuid4(), uuid.uuid4(), "export", "sheets", {"type": "x", "data": {"b": [1], "a": None}}
    )
    assert sheet_row(row) == [str(row.id), "x", "", "[1]"]


@pytest.mark.parametrize(
    ("status", "failure"),
    [(400, PermanentFailure), (401, TransientFailure), (403, TransientFailure), (404, TransientFailure),
     (429, TransientFailure), (500, TransientFailure), (503, TransientFailure)],
)  # fmt: skip
async def test_what_a_sheets_answer_means(
    google: GoogleStandIn, key_file: Path, status: int, failure: type
) -> None:
    google.sheets_status = status
    sheets = adapter(google, key_file)
    try:
        with pytest.raises(failure, match=f"Sheets {status}: refused by the test"):
            await sheets.send(lead_export())
    finally:
        await sheets.close()


async def test_a_401_gets_a_fresh_token_for_the_next_row(google: GoogleStandIn, key_file: Path) -> None:
    sheets = adapter(google, key_file)
    try:
        google.sheets_status = 401
        with pytest.raises(TransientFailure):
            await sheets.send(lead_export())
        google.sheets_status = 200
        await sheets.send(lead_export())
    finally:
        await sheets.close()
    assert google.tokens_issued == 2
    assert google.sheets.requests[-1].headers["authorization"] == "Bearer token-2"


async def test_a_token_endpoint_that_refuses_is_transient_and_nothing_is_appended(
    google: GoogleStandIn, key_file: Path
) -> None:
    google.token_server.answer = lambda request: (
        400,
        {"error": "invalid_grant", "error_description": "bad key"},
    )
    sheets = adapter(google, key_file)
    try:
        with pytest.raises(TransientFailure, match="Google token exchange failed"):
            await sheets.send(lead_export())
    finally:
        await sheets.close()
    assert google.sheets.requests == []


async def test_an_unreadable_key_file_waits_and_a_missing_setting_refuses(
    google: GoogleStandIn, tmp_path: Path
) -> None:
    sheets = adapter(google, tmp_path / "missing.json")
    try:
        with pytest.raises(TransientFailure, match="GOOGLE_SERVICE_ACCOUNT_FILE is unreadable") as waits:
            await sheets.send(lead_export())
        assert not waits.value.reached_remote
    finally:
        await sheets.close()
    unset = adapter(google, "")
    try:
        with pytest.raises(
            PermanentFailure, match="needs SHEETS_SPREADSHEET_ID and GOOGLE_SERVICE_ACCOUNT_FILE"
        ):
            await unset.send(lead_export())
    finally:
        await unset.close()
    assert google.sheets.requests == [] and google.tokens_issued == 0


async def test_sheets_unreachable_is_transient(google: GoogleStandIn, key_file: Path) -> None:
    settings = NotifySettings(  # type: ignore[call-arg]
        _env_file=None,
        export_mode="sheets",
        sheets_spreadsheet_id=SPREADSHEET,
        google_service_account_file=str(key_file),
        sheets_api_url=f"http://127.0.0.1:{free_port()}",
    )
    sheets = SheetsAdapter(settings)
    try:
        with pytest.raises(TransientFailure, match="Sheets unreachable"):
            await sheets.send(lead_export())
    finally:
        await sheets.close()
    assert google.tokens_issued == 1
