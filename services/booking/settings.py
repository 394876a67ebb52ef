from __future__ import annotations

from typing import ClassVar

from libs.common.settings import CommonSettings


class BookingSettings(CommonSettings):
    # Reported by /v1/admin/feature-flags (libs/common OpsService.GetFeatureFlags).
    FEATURE_FLAGS: ClassVar[tuple[str, ...]] = ("deposits_enabled",)
    # booking serves the gateway, notify and jobs, and calls no one: no INTERNAL_SIGNING_KEY.
    SERVES_CALLS: ClassVar[bool] = True
    service_name: str = "booking"
    booking_grpc_port: int = 50052
    booking_http_port: int = 8102
    deposits_enabled: bool = False
    default_currency: str = "CAD"
    # POST /v1/admin/cleanup removes pending bookings created longer ago than this.
    pending_booking_ttl_hours: int = 24
    # Longest window scheduling suggestions/conflicts accept (seed 002: invalid windows are 422).
    schedule_max_window_days: int = 31
    phone_region: str = "CA"
    postal_code_country: str = "CA"
    # Seed 002 RETENTION_*: leads older than this many days that never became a booking are deleted
    # by POST /v1/admin/retention/cleanup (and the retention-cleanup job); 0 keeps them.
    retention_lead_days: int = 0
