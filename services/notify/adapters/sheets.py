"""Exports appended as rows to a Google Sheet (EXPORT_MODE=sheets).

One export is one row, appended with the Sheets API (`values:append`, RAW values, INSERT_ROWS) to
SHEETS_RANGE of SHEETS_SPREADSHEET_ID. The row starts with the outbox row id, the same on every retry:
an append is not idempotent, so a retry after a lost answer can add the row twice, and the id tells the
reader it is one export. Then the export's type and its data, in the columns COLUMNS names for the type
(other types: their fields in alphabetical order; lists and objects as JSON).

Authentication is a Google service account (GOOGLE_SERVICE_ACCOUNT_FILE, the JSON key; the sheet must be
shared with its client_email): google-auth signs the JWT and exchanges it at the key's token_uri for an
access token, which is reused until it nears expiry. The exchange runs in a thread (google-auth's
transport is synchronous) under a lock, so lanes share one token.

What answers mean: 2xx appended; 400 refuses this row for good; 401/403/404 (token revoked, sheet not
shared, wrong spreadsheet id) and 408/429/5xx retry — the first group is our configuration's fault, not
the row's, so the rows wait and the breaker opens instead of the whole queue going dead.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from services.notify.adapters.base import Outbound, PermanentFailure, Send, StatelessLane, TransientFailure
from services.notify.settings import NotifySettings

if TYPE_CHECKING:
    from google.oauth2 import service_account

SCOPES = ("https://www.googleapis.com/auth/spreadsheets",)
RETRYABLE = {401, 403, 404, 408, 429}
# Column order per export type; the first two columns are always the export id and the type.
COLUMNS: dict[str, tuple[str, ...]] = {
    "lead.created": (
        "created_at",
        "lead_id",
        "name",
        "email",
        "postal_code",
        "cleaning_type",
        "total_before_tax_cents",
        "org_id",
    ),
}


def sheet_row(row: Outbound) -> list[str | int | float | bool]:
    """The cells of one export: id, type, then the data fields in the type's column order."""
    kind = str(row.payload.get("type") or "")
    data = row.payload.get("data") or {}
    if not isinstance(data, dict):
        raise PermanentFailure("export payload 'data' is not an object", reached_remote=False)
    names = COLUMNS.get(kind) or tuple(sorted(data))
    return [str(row.id), kind, *(_cell(data.get(name)) for name in names)]


def _cell(value: Any) -> str | int | float | bool:
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _error_text(response: httpx.Response) -> str:
    try:
        detail = str((response.json().get("error") or {}).get("message") or "")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    return f"Sheets {response.status_code}: {detail}".rstrip(": ")


class SheetsAdapter:
    name = "sheets"

    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(
            base_url=settings.sheets_api_url.rstrip("/"),
            timeout=settings.sheets_timeout_seconds,
            follow_redirects=False,
            trust_env=False,
        )
        self._credentials: service_account.Credentials | None = None
        self._token_lock = asyncio.Lock()

    def lane(self) -> AbstractAsyncContextManager[Send]:
        return StatelessLane(self.send)

    def _path(self) -> str:
        spreadsheet = quote(self.settings.sheets_spreadsheet_id, safe="")
        cells = quote(self.settings.sheets_range, safe="")
        return f"/v4/spreadsheets/{spreadsheet}/values/{cells}:append"

    async def send(self, row: Outbound) -> None:
        if not (self.settings.sheets_spreadsheet_id and self.settings.google_service_account_file):
            raise PermanentFailure(
                "EXPORT_MODE=sheets needs SHEETS_SPREADSHEET_ID and GOOGLE_SERVICE_ACCOUNT_FILE",
                reached_remote=False,
            )
        values = [sheet_row(row)]
        token = await self._token()
        try:
            response = await self.client.post(
                self._path(),
                params={"valueInputOption": "RAW", "insertDataOption": "INSERT_ROWS"},
                json={"values": values},
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise TransientFailure(f"Sheets unreachable: {exc or type(exc).__name__}") from exc
        if 200 <= response.status_code < 300:
            return
        if response.status_code == 401 and self._credentials is not None:
            self._credentials.token = None  # revoked or expired early: the next send gets a new one
        if 400 <= response.status_code < 500 and response.status_code not in RETRYABLE:
            raise PermanentFailure(_error_text(response))
        raise TransientFailure(_error_text(response))

    async def _token(self) -> str:
        # google-auth (and the requests it brings) is imported on first use, not at notify's start:
        # most installations never export to Sheets, and it is a fifth of notify's import time.
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request
        from google.oauth2 import service_account

        async with self._token_lock:
            if self._credentials is None:
                try:
                    self._credentials = service_account.Credentials.from_service_account_file(
                        self.settings.google_service_account_file, scopes=list(SCOPES)
                    )
                except (OSError, ValueError, KeyError) as exc:
                    # A configuration fault, fixable without touching the rows: they wait.
                    raise TransientFailure(
                        f"GOOGLE_SERVICE_ACCOUNT_FILE is unreadable or not a service account key: {exc}",
                        reached_remote=False,
                    ) from exc
            credentials = self._credentials
            if not credentials.valid:
                try:
                    await asyncio.wait_for(
                        asyncio.to_thread(credentials.refresh, Request()),
                        timeout=self.settings.sheets_timeout_seconds,
                    )
                except (GoogleAuthError, TimeoutError) as exc:
                    raise TransientFailure(
                        f"Google token exchange failed: {exc or type(exc).__name__}"
                    ) from exc
            return str(credentials.token)

    async def close(self) -> None:
        await self.client.aclose()
