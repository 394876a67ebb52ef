from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from pydantic import Field, field_validator

from libs.common.errors import InvalidArgument
from libs.common.settings import CommonSettings
from services.billing.currency import normalise_currency
from services.billing.totals import parse_tax_rate


class BillingSettings(CommonSettings):
    # Reported by /v1/admin/feature-flags (libs/common OpsService.GetFeatureFlags).
    FEATURE_FLAGS: ClassVar[tuple[str, ...]] = ("deposits_enabled",)
    # billing calls iam (org names), booking (prices of completed bookings), notify (emails) and media (stored
    # bytes): its own key; it serves
    # the gateway and jobs (their public keys).
    CALLS_SERVICES: ClassVar[bool] = True
    SERVES_CALLS: ClassVar[bool] = True
    service_name: str = "billing"
    billing_grpc_port: int = 50053
    billing_http_port: int = 8103
    iam_grpc_target: str = "127.0.0.1:50051"
    booking_grpc_target: str = "127.0.0.1:50052"
    notify_grpc_target: str = "127.0.0.1:50055"
    # Media answers the usage report's stored bytes (GetStorageUsage). Empty: media is not deployed, and
    # the report says storage is not checked rather than failing.
    media_grpc_target: str = "127.0.0.1:50054"

    # Seed 002 "Stripe" group. The secret key and the webhook secret live in billing alone.
    stripe_secret_key: str = Field(default="", repr=False)
    stripe_webhook_secret: str = Field(default="", repr=False)
    # Where the stripe library sends its calls; empty is Stripe itself. make dev and the tests point it
    # at the local Stripe (tools/stripe_local.py).
    stripe_api_base: str = ""
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    stripe_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Checkout returns the payer here; {invoice_id} / {booking_id} are filled in when present.
    stripe_success_url: str = "http://localhost:8000/pay/success"
    stripe_cancel_url: str = "http://localhost:8000/pay/cancel"
    stripe_circuit_failure_threshold: int = Field(default=5, ge=1, le=100)
    stripe_circuit_reset_seconds: float = Field(default=30.0, gt=0, le=3600)

    deposits_enabled: bool = False
    # A deposit is this share of the booking's price (percent), at least the minimum in cents.
    deposit_percent: int = Field(default=25, ge=1, le=100)
    deposit_min_cents: int = Field(default=5000, ge=50)

    # Defaults for an org that has not set its own (PUT /v1/admin/finance/settings).
    invoice_default_tax_rate: str = "0"
    invoice_payment_terms_days: int = Field(default=14, ge=0, le=365)
    invoice_default_currency: str = "CAD"
    # The public invoice link emailed by send: {token} is replaced by the invoice's token.
    invoice_public_url: str = "http://localhost:8000/v1/public/invoices/{token}"

    # Stored webhook events: how many the processing loop leases per round, how long a lease holds,
    # and how often it looks for due retries when no webhook woke it.
    stripe_events_batch_size: int = Field(default=50, ge=1, le=1000)
    stripe_events_lease_seconds: int = Field(default=60, ge=5, le=3600)
    stripe_events_poll_seconds: float = Field(default=2.0, gt=0, le=300)
    # The plan (a row of billing.plans) of an org that never changed plan.
    subscription_default_plan: str = Field(default="starter", min_length=1, max_length=32)
    # Rows per page of the accounting CSV (services/billing/accounting.py): each page is one short read
    # transaction and one gRPC answer, so this bounds billing's and the gateway's memory per export.
    accounting_export_page_size: int = Field(default=2000, ge=1, le=10_000)

    def secrets_to_check(self) -> dict[str, str]:
        # Only in prod, and only when Stripe is on: an org may invoice without card payments.
        if not self.stripe_secret_key:
            return super().secrets_to_check()
        return {**super().secrets_to_check(), "STRIPE_WEBHOOK_SECRET": self.stripe_webhook_secret}

    @property
    def stripe_enabled(self) -> bool:
        return bool(self.stripe_secret_key)

    @property
    def default_tax_rate(self) -> Decimal:
        return parse_tax_rate(self.invoice_default_tax_rate)

    @field_validator("invoice_default_tax_rate")
    @classmethod
    def _tax_rate(cls, value: str) -> str:
        try:
            parse_tax_rate(value, "INVOICE_DEFAULT_TAX_RATE")
        except InvalidArgument as bad:
            raise ValueError("; ".join(v.description for v in bad.violations)) from None
        return value

    @field_validator("invoice_default_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        try:
            return normalise_currency(value)
        except InvalidArgument as bad:
            raise ValueError("; ".join(v.description for v in bad.violations)) from None

    @field_validator("invoice_public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if "{token}" not in value:
            raise ValueError("INVOICE_PUBLIC_URL must contain {token}")
        return value
