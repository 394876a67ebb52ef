"""The Sheets export adapter against real local HTTP servers standing in for Google: one for the OAuth
token endpoint (the service account key's token_uri) and one for the Sheets API. The token exchange is
google-auth's own (a JWT signed with the key, checked here with the key's public half)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.notify.adapters.base import Outbound, PermanentFailure, TransientFailure
from services.notify.adapters.sheets import SheetsAdapter, sheet_row
from services.notify.settings import NotifySettings
from services.notify.tests.own_notify import HttpRecorder, Recorded
from tools.devstack import free_port

SPREADSHEET = "1AbC-sheet_id"
CLIENT_EMAIL = "cws-notify@example-project.iam.gserviceaccount.com"
# google-auth addresses the assertion to Google's token endpoint whatever the key's token_uri.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
APPEND_PATH = f"/v4/spreadsheets/{SPREADSHEET}/values/Leads%21A1:append"


class Google:
    """The token endpoint and the Sheets API, each a recording local HTTP server."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.public_key = key.public_key()
        self.sheets_status = 200
        self.tokens_issued = 0
        self.token_server = HttpRecorder(answer=self._token).start()
        self.sheets = HttpRecorder(answer=self._append).start()

    @property
    def token_uri(self) -> str:
        return f"{self.token_server.url}/token"

    def _token(self, request: Recorded) -> tuple[int, Any]:
        form = parse_qs(request.body.decode())
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        claims = jwt.decode(
            form["assertion"][0], self.public_key, algorithms=["RS256"], audience=GOOGLE_TOKEN_AUDIENCE
        )
        assert claims["iss"] == CLIENT_EMAIL
        assert claims["scope"] == "https://www.googleapis.com/auth/spreadsheets"
        self.tokens_issued += 1
        return 200, {
            "access_token": f"token-{self.tokens_issued}",
            "expires_in": 3600,
            "token_type": "Bearer",
        }

    def _append(self, request: Recorded) -> tuple[int, Any]:
        if self.sheets_status != 200:
            return self.sheets_status, {
                "error": {"code": self.sheets_status, "message": "refused by the test"}
            }
        return 200, {"spreadsheetId": SPREADSHEET, "updates": {"updatedRows": 1}}

    def stop(self) -> None:
        self.token_server.stop()
        self.sheets.stop()


@pytest.fixture
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def google(key: rsa.RSAPrivateKey) -> Any:
    server = Google(key)
    yield server
    server.stop()


@pytest.fixture
def key_file(tmp_path: Path, key: rsa.RSAPrivateKey, google: Google) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "example-project",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": CLIENT_EMAIL,
                "client_id": "1",
                "token_uri": google.token_uri,
            }
        )
    )
    return path


def adapter(google: Google, key_file: Path | str, **values: Any) -> SheetsAdapter:
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
    google: Google, key_file: Path
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
async def test_what_a_sheets_answer_means(google: Google, key_file: Path, status: int, failure: type) -> None:
    google.sheets_status = status
    sheets = adapter(google, key_file)
    try:
        with pytest.raises(failure, match=f"Sheets {status}: refused by the test"):
            await sheets.send(lead_export())
    finally:
        await sheets.close()


async def test_a_401_gets_a_fresh_token_for_the_next_row(google: Google, key_file: Path) -> None:
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
    google: Google, key_file: Path
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
    google: Google, tmp_path: Path
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


async def test_sheets_unreachable_is_transient(google: Google, key_file: Path) -> None:
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
