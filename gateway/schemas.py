"""Request and response bodies. Requests forbid unknown fields and bound every string, so bad input
is a clear 422 before any service is asked."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Email = Annotated[str, Field(min_length=3, max_length=320)]
Password = Annotated[str, Field(min_length=1, max_length=256)]
TotpCode = Annotated[str, Field(pattern=r"^\d{6}$", description="6-digit TOTP code")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str
    errors: list[dict[str, str]] | None = None


class LoginIn(Strict):
    email: Email
    password: Password
    totp_code: TotpCode | None = None


class RefreshIn(Strict):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]
    totp_code: TotpCode | None = None


class LogoutIn(Strict):
    refresh_token: Annotated[str, Field(max_length=512)] | None = None


class SignupIn(Strict):
    org_name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Email
    password: Password
    full_name: Annotated[str, Field(max_length=200)] = ""
    time_zone: Annotated[str, Field(max_length=64)] = "UTC"


class SignupAcceptedOut(BaseModel):
    """The same for every well-formed sign-up, whether or not the email has an account (issue 9)."""

    status: str = Field(description='Always "pending_confirmation"')
    detail: str


class ConfirmSignupIn(Strict):
    token: Annotated[str, Field(min_length=1, max_length=2048, description="From the confirmation email")]


class ChangePasswordIn(Strict):
    current_password: Password
    new_password: Password


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_expires_in: int
    mfa_verified: bool
    must_change_password: bool
    org_id: str
    user_id: str
    role: str


StepUpPassword = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        description="Your current password (step-up): a signed-in session alone cannot change TOTP",
    ),
]


class EnrollTotpIn(Strict):
    current_password: StepUpPassword


class EnrollOut(BaseModel):
    secret: str
    otpauth_uri: str


class VerifyTotpIn(Strict):
    code: TotpCode
    current_password: StepUpPassword


class VerifyTotpOut(TokensOut):
    revoked_sessions: int


class DisableTotpIn(Strict):
    user_id: Annotated[str, Field(max_length=64)] | None = None
    current_password: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=256,
                description="The acting OWNER's own current password (step-up), whoever's TOTP is "
                "cleared; required of a signed-in user, not of a Basic Auth principal",
            ),
        ]
        | None
    ) = None


class RevokedOut(BaseModel):
    revoked_sessions: int


class UserOut(BaseModel):
    id: str
    org_id: str
    email: str
    full_name: str
    role: str
    totp_enabled: bool
    must_change_password: bool
    active: bool
    created_at: datetime | None


class UsersOut(BaseModel):
    users: list[UserOut]
    total: int


class CreateUserIn(Strict):
    email: Email
    full_name: Annotated[str, Field(max_length=200)] = ""
    role: Annotated[str, Field(max_length=20)]


class UserWithPasswordOut(BaseModel):
    user: UserOut
    temp_password: str = Field(description="Shown once; the user must change it at first login")


class BreakGlassIn(Strict):
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    ttl_minutes: Annotated[int, Field(ge=1, le=1440)]


class BreakGlassOut(BaseModel):
    token: str
    expires_at: datetime
    session_id: str


class ProfileOut(BaseModel):
    username: str
    role: str
    org_id: str
    auth_method: str
    mfa_verified: bool
    principal_id: str


class EstimateIn(Strict):
    beds: Annotated[int, Field(ge=0, le=20)]
    baths: Annotated[float, Field(ge=0, le=20, multiple_of=0.5)]
    cleaning_type: Annotated[str, Field(min_length=1, max_length=20)]


class LeadIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    phone: Annotated[str, Field(min_length=1, max_length=32)]
    email: Email
    postal_code: Annotated[str, Field(min_length=1, max_length=16)]
    structured_inputs: EstimateIn
    notes: Annotated[str, Field(max_length=2000)] = ""
    captcha_token: Annotated[str, Field(max_length=4096)] | None = None


class BookingIn(Strict):
    lead_id: Annotated[str, Field(max_length=64)] | None = None
    starts_at: AwareDatetime
    duration_minutes: Annotated[int, Field(ge=15, le=1440)]
    client_name: Annotated[str, Field(max_length=200)] = ""
    client_email: Annotated[str, Field(max_length=320)] = ""
    client_phone: Annotated[str, Field(max_length=32)] = ""
    address: Annotated[str, Field(max_length=500)] = ""
    postal_code: Annotated[str, Field(max_length=16)] = ""
    cleaning_type: Annotated[str, Field(max_length=20)] = ""
    beds: Annotated[int, Field(ge=0, le=20)] = 0
    baths: Annotated[float, Field(ge=0, le=20, multiple_of=0.5)] = 0
    notes: Annotated[str, Field(max_length=2000)] = ""
    deposit_required: bool = False


class CancelIn(Strict):
    reason: Annotated[str, Field(max_length=500)] = ""


class RescheduleIn(Strict):
    starts_at: AwareDatetime
    duration_minutes: Annotated[int, Field(ge=15, le=1440)]


class ClientOut(BaseModel):
    """A client: the org's bookings sharing a (lower-cased) client email; name and phone are the
    latest booking's."""

    email: str
    name: str
    phone: str
    bookings: int
    first_booking_at: datetime
    last_booking_at: datetime
    upcoming_bookings: int = Field(description="Pending or confirmed bookings that start from now on")


class ClientsOut(BaseModel):
    clients: list[ClientOut]
    total: int
