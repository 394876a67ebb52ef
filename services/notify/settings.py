from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from libs.common.settings import CommonSettings, CsvList, split_csv


class NotifySettings(CommonSettings):
    # Reported by /v1/admin/feature-flags (libs/common OpsService.GetFeatureFlags).
    FEATURE_FLAGS: ClassVar[tuple[str, ...]] = ("export_mode",)
    # notify calls iam and booking (its own key) and serves the gateway and jobs (their public keys).
    CALLS_SERVICES: ClassVar[bool] = True
    SERVES_CALLS: ClassVar[bool] = True
    service_name: str = "notify"
    notify_grpc_port: int = 50055
    notify_http_port: int = 8105
    # Notify asks IAM to mint magic links and booking for upcoming bookings.
    iam_grpc_target: str = "127.0.0.1:50051"
    booking_grpc_target: str = "127.0.0.1:50052"

    # Seed 002 delivery outbox.
    outbox_base_backoff_seconds: float = 30.0
    outbox_max_backoff_seconds: float = 3600.0
    outbox_max_attempts: int = 8
    # Rows claimed per round, parallel sends (one reused SMTP connection each), and how long a claim
    # holds a row before another worker may take it (a worker that died mid-send).
    outbox_batch_size: int = 100
    outbox_concurrency: int = 16
    outbox_lease_seconds: int = 120
    outbox_poll_seconds: float = 1.0

    # Adapters (seed 000/002).
    email_mode: str = "off"  # off | smtp | sendgrid
    email_from: str = "no-reply@example.com"
    email_from_name: str = "CleanWithSnapshot"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_use_tls: bool = False  # implicit TLS (465)
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    sendgrid_api_key: str = ""
    sendgrid_api_url: str = "https://api.sendgrid.com"
    email_temp_passwords: bool = False
    export_mode: str = "off"  # off | webhook | sheets
    export_webhook_url: str = ""
    # Standard Webhooks signing secret ("whsec_" + base64).
    export_webhook_secret: str = ""
    # Hosts (and addresses or CIDRs) webhooks may go to. A host resolving to a private, loopback or
    # link-local address is refused unless that address is listed here too.
    export_webhook_allowed_hosts: CsvList = []
    export_webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # EXPORT_MODE=sheets: rows appended to SHEETS_RANGE of this spreadsheet, as the service account
    # whose JSON key is GOOGLE_SERVICE_ACCOUNT_FILE (share the sheet with its client_email).
    sheets_spreadsheet_id: str = ""
    sheets_range: str = "Leads!A1"
    google_service_account_file: str = ""
    sheets_api_url: str = "https://sheets.googleapis.com"
    sheets_timeout_seconds: float = 10.0
    # Circuit breaker per adapter.
    circuit_failure_threshold: int = 5
    circuit_reset_seconds: float = 30.0

    # Links and reminders.
    client_portal_base_url: str = "http://127.0.0.1:8000"
    email_reminder_window_hours: int = 24
    # email-dlq job: a dead email is retried once more after this long, if it died of a transient
    # failure (server down, timeouts); permanent refusals stay dead for an operator.
    email_dlq_retry_after_seconds: int = 3600

    # Seed 002 RETENTION_*: sent/skipped outbox rows and email events older than this are deleted.
    retention_outbox_days: int = 30
    retention_email_events_days: int = 365

    @field_validator("export_webhook_allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> list[str]:
        return [h.lower() for h in split_csv(value)]

    @field_validator("email_mode")
    @classmethod
    def _email_mode(cls, value: str) -> str:
        if value.lower() not in {"off", "smtp", "sendgrid"}:
            raise ValueError("EMAIL_MODE must be off, smtp or sendgrid")
        return value.lower()

    @field_validator("export_mode")
    @classmethod
    def _export_mode(cls, value: str) -> str:
        if value.lower() not in {"off", "webhook", "sheets"}:
            raise ValueError("EXPORT_MODE must be off, webhook or sheets")
        return value.lower()

    def prod_problems(self) -> list[str]:
        problems = super().prod_problems()
        if self.email_mode == "sendgrid" and not self.sendgrid_api_key:
            problems.append("EMAIL_MODE=sendgrid requires SENDGRID_API_KEY")
        if self.export_mode == "webhook" and not (self.export_webhook_url and self.export_webhook_secret):
            problems.append("EXPORT_MODE=webhook requires EXPORT_WEBHOOK_URL and EXPORT_WEBHOOK_SECRET")
        if self.export_mode == "sheets":
            if not self.sheets_spreadsheet_id:
                problems.append("EXPORT_MODE=sheets requires SHEETS_SPREADSHEET_ID")
            if not Path(self.google_service_account_file or "").is_file():
                problems.append(
                    "EXPORT_MODE=sheets requires GOOGLE_SERVICE_ACCOUNT_FILE, a readable key file"
                )
        return problems
