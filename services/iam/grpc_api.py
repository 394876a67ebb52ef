"""The IAM servicer: proto in, domain call, proto out. No SQL and no business rules here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cws.iam.v1 import iam_pb2, iam_pb2_grpc
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from libs.common import context as request_context
from libs.common.db import Database, unit_of_work
from libs.common.errors import FailedPrecondition, Unauthenticated, invalid
from services.iam import accounts, audit, breakglass, client_login, mfa, portal_tokens, sessions
from services.iam.settings import IamSettings

MANAGERS = ("OWNER", "ADMIN")
STAFF = ("OWNER", "ADMIN", "DISPATCHER", "FINANCE", "VIEWER")


def _ts(value: datetime | int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC))
    return stamp


def _struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    out = struct_pb2.Struct()
    out.update(value)
    return out


def _tokens(issued: sessions.IssuedTokens) -> iam_pb2.Tokens:
    return iam_pb2.Tokens(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        token_type="bearer",
        expires_in=issued.expires_in,
        refresh_expires_in=issued.refresh_expires_in,
        mfa_verified=issued.mfa_verified,
        must_change_password=issued.must_change_password,
        org_id=issued.org_id,
        user_id=issued.user_id,
        role=issued.role,
    )


def _user(row: Any) -> iam_pb2.User:
    return iam_pb2.User(
        id=str(row.id),
        org_id=str(row.org_id),
        email=row.email,
        full_name=row.full_name,
        role=row.role,
        totp_enabled=row.totp_enabled,
        must_change_password=row.must_change_password,
        active=row.active,
        created_at=_ts(row.created_at),
    )


def _page(limit: int, offset: int) -> tuple[int, int]:
    if limit < 0 or limit > 200:
        raise invalid("limit", "must be between 1 and 200")
    if offset < 0:
        raise invalid("offset", "must not be negative")
    return limit or 50, offset


def _signed_in_user() -> request_context.RequestContext:
    ctx = request_context.current()
    if ctx.auth_method != request_context.AuthMethod.Value("AUTH_METHOD_JWT") or not ctx.session_id:
        raise Unauthenticated(
            "this needs a signed-in user (a bearer token), not Basic Auth", code="user_session_required"
        )
    return ctx


class IamServicer(iam_pb2_grpc.IamServiceServicer):
    def __init__(self, db: Database, settings: IamSettings) -> None:
        self.db = db
        self.settings = settings

    async def Login(self, request: iam_pb2.LoginRequest, context: Any) -> iam_pb2.LoginResponse:
        if not request.email or not request.password:
            raise invalid("email" if not request.email else "password", "is required")
        issued = await sessions.login(
            self.db,
            self.settings,
            email=request.email,
            password=request.password,
            totp_code=request.totp_code,
            client_ip=request_context.current().client_ip,
        )
        return iam_pb2.LoginResponse(tokens=_tokens(issued))

    async def Refresh(self, request: iam_pb2.RefreshRequest, context: Any) -> iam_pb2.RefreshResponse:
        if not request.refresh_token:
            raise invalid("refresh_token", "is required")
        issued = await sessions.refresh(
            self.db, self.settings, refresh_token=request.refresh_token, totp_code=request.totp_code
        )
        return iam_pb2.RefreshResponse(tokens=_tokens(issued))

    async def Logout(self, request: iam_pb2.LogoutRequest, context: Any) -> iam_pb2.LogoutResponse:
        ctx = request_context.current()
        await sessions.logout(
            self.db, org_id=ctx.org_id, session_id=ctx.session_id, refresh_token=request.refresh_token
        )
        return iam_pb2.LogoutResponse()

    async def CheckSession(self, request: iam_pb2.CheckSessionRequest, context: Any) -> Any:
        ctx = request_context.current()
        if not ctx.org_id:
            raise Unauthenticated("authentication required")
        active = await sessions.is_active(self.db, org_id=ctx.org_id, session_id=request.session_id)
        return iam_pb2.CheckSessionResponse(active=active)

    async def ListOrgs(self, request: iam_pb2.ListOrgsRequest, context: Any) -> iam_pb2.ListOrgsResponse:
        request_context.require_service()
        if not 0 <= request.limit <= 1000:
            raise invalid("limit", "must be between 1 and 1000")
        after = _uuid_or_none(request.after_org_id, "after_org_id")
        rows = await accounts.list_orgs(self.db, after=after, limit=request.limit or 500)
        return iam_pb2.ListOrgsResponse(
            orgs=[iam_pb2.OrgSummary(org_id=str(r.id), name=r.name, time_zone=r.time_zone) for r in rows]
        )

    async def Signup(self, request: iam_pb2.SignupRequest, context: Any) -> iam_pb2.SignupResponse:
        if not self.settings.signup_enabled:
            raise FailedPrecondition("sign-up is disabled on this installation", code="signup_disabled")
        await accounts.create_org_with_owner(
            self.db,
            name=request.org_name,
            email=request.email,
            password=request.password,
            full_name=request.full_name,
            time_zone=request.time_zone or "UTC",
        )
        issued = await sessions.login(
            self.db,
            self.settings,
            email=request.email,
            password=request.password,
            totp_code="",
            client_ip=request_context.current().client_ip,
        )
        return iam_pb2.SignupResponse(tokens=_tokens(issued))

    async def ChangePassword(self, request: iam_pb2.ChangePasswordRequest, context: Any) -> Any:
        ctx = _signed_in_user()
        async with unit_of_work(self.db, ctx.org_id) as uow:
            await accounts.change_password(
                uow,
                user_id=ctx.principal_id,
                session_id=ctx.session_id,
                current=request.current_password,
                new=request.new_password,
            )
        return iam_pb2.ChangePasswordResponse()

    async def EnrollTotp(
        self, request: iam_pb2.EnrollTotpRequest, context: Any
    ) -> iam_pb2.EnrollTotpResponse:
        ctx = _signed_in_user()
        async with unit_of_work(self.db, ctx.org_id) as uow:
            enrolment = await mfa.enroll(uow, self.settings, ctx.principal_id)
        return iam_pb2.EnrollTotpResponse(secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri)

    async def VerifyTotp(
        self, request: iam_pb2.VerifyTotpRequest, context: Any
    ) -> iam_pb2.VerifyTotpResponse:
        ctx = _signed_in_user()
        async with unit_of_work(self.db, ctx.org_id) as uow:
            issued, revoked = await mfa.verify(
                uow, self.settings, user_id=ctx.principal_id, session_id=ctx.session_id, code=request.code
            )
        return iam_pb2.VerifyTotpResponse(tokens=_tokens(issued), revoked_sessions=revoked)

    async def DisableTotp(self, request: iam_pb2.DisableTotpRequest, context: Any) -> Any:
        ctx = request_context.require_role("OWNER")
        target = request.user_id or ctx.principal_id
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            revoked = await mfa.disable(uow, actor_role=ctx.role, target_user_id=target)
        return iam_pb2.DisableTotpResponse(revoked_sessions=revoked)

    async def ListUsers(self, request: iam_pb2.ListUsersRequest, context: Any) -> iam_pb2.ListUsersResponse:
        request_context.require_role(*MANAGERS)
        limit, offset = _page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows, total = await accounts.list_users(uow, limit=limit, offset=offset)
        return iam_pb2.ListUsersResponse(users=[_user(r) for r in rows], total=total)

    async def CreateUser(
        self, request: iam_pb2.CreateUserRequest, context: Any
    ) -> iam_pb2.CreateUserResponse:
        ctx = request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row, temp = await accounts.create_user(
                uow,
                actor_role=ctx.role,
                email=request.email,
                full_name=request.full_name,
                role=request.role,
                email_temp_password=self.settings.email_temp_passwords,
            )
        return iam_pb2.CreateUserResponse(user=_user(row), temp_password=temp)

    async def ResetUserPassword(self, request: iam_pb2.ResetUserPasswordRequest, context: Any) -> Any:
        ctx = request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row, temp = await accounts.reset_password(
                uow,
                actor_role=ctx.role,
                user_id=request.user_id,
                email_temp_password=self.settings.email_temp_passwords,
            )
        return iam_pb2.ResetUserPasswordResponse(user=_user(row), temp_password=temp)

    async def LogoutUser(
        self, request: iam_pb2.LogoutUserRequest, context: Any
    ) -> iam_pb2.LogoutUserResponse:
        ctx = request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            revoked = await accounts.logout_user(uow, actor_role=ctx.role, user_id=request.user_id)
        return iam_pb2.LogoutUserResponse(revoked_sessions=revoked)

    async def StartBreakGlass(self, request: iam_pb2.StartBreakGlassRequest, context: Any) -> Any:
        request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            started = await breakglass.start(
                uow, self.settings, reason=request.reason, ttl_minutes=request.ttl_minutes
            )
        return iam_pb2.StartBreakGlassResponse(
            token=started.token, expires_at=_ts(started.expires_at), session_id=str(started.session_id)
        )

    async def VerifyBreakGlass(self, request: iam_pb2.VerifyBreakGlassRequest, context: Any) -> Any:
        request_context.require_role(*STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await breakglass.verify(uow, request.token)
        return iam_pb2.VerifyBreakGlassResponse(
            session_id=str(found.session_id), reason=found.reason, expires_at=_ts(found.expires_at)
        )

    async def ListAuditLogs(self, request: iam_pb2.ListAuditLogsRequest, context: Any) -> Any:
        request_context.require_role(*MANAGERS)
        limit, offset = _page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows = await audit.list_entries(uow, limit=limit, offset=offset, action=request.action)
        return iam_pb2.ListAuditLogsResponse(
            entries=[
                iam_pb2.AuditLog(
                    id=str(r.id),
                    org_id=str(r.org_id),
                    actor=r.actor,
                    role=r.role,
                    action=r.action,
                    resource_type=r.resource_type,
                    resource_id=r.resource_id,
                    before=_struct(r.before),
                    after=_struct(r.after),
                    request_id=r.request_id,
                    break_glass_reason=r.break_glass_reason or "",
                    break_glass_session_id=str(r.break_glass_session_id or ""),
                    created_at=_ts(r.created_at),
                )
                for r in rows
            ]
        )

    async def RecordAudit(self, request: iam_pb2.RecordAuditRequest, context: Any) -> Any:
        request_context.require_role(*STAFF)
        if not request.action:
            raise invalid("action", "is required")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            await audit.record(
                uow,
                request.action,
                resource_type=request.resource_type,
                resource_id=request.resource_id,
                after=MessageToDict(request.after) if request.HasField("after") else None,
            )
        return iam_pb2.RecordAuditResponse()

    async def IssueClientPortalToken(
        self, request: iam_pb2.IssueClientPortalTokenRequest, context: Any
    ) -> Any:
        request_context.require_role("OWNER", "ADMIN", "DISPATCHER")
        org_id = str(request_context.current_org_id())
        email = accounts.normalise_email(request.email) if request.email else ""
        if not (email or request.client_id):
            raise invalid("email", "email or client_id is required")
        token, expires = portal_tokens.issue(
            portal_tokens.CLIENT,
            self.settings.client_portal_secret,
            org_id=org_id,
            subject=request.client_id or email,
            email=email,
            ttl_minutes=request.ttl_minutes or self.settings.client_portal_token_ttl_minutes,
        )
        return iam_pb2.IssueClientPortalTokenResponse(token=token, expires_at=_ts(expires))

    async def VerifyClientPortalToken(
        self, request: iam_pb2.VerifyClientPortalTokenRequest, context: Any
    ) -> Any:
        claims = portal_tokens.verify(portal_tokens.CLIENT, self.settings.client_portal_secret, request.token)
        return iam_pb2.VerifyClientPortalTokenResponse(
            org_id=claims.org_id,
            client_id=claims.subject,
            email=claims.email,
            expires_at=_ts(claims.expires_at),
        )

    async def IssueWorkerPortalToken(
        self, request: iam_pb2.IssueWorkerPortalTokenRequest, context: Any
    ) -> Any:
        request_context.require_role("OWNER", "ADMIN", "DISPATCHER")
        org_id = str(request_context.current_org_id())
        try:
            worker_id = str(uuid.UUID(request.worker_id))
        except ValueError as exc:
            raise invalid("worker_id", "must be a UUID") from exc
        token, expires = portal_tokens.issue(
            portal_tokens.WORKER,
            self.settings.worker_portal_secret,
            org_id=org_id,
            subject=worker_id,
            email="",
            ttl_minutes=request.ttl_minutes or self.settings.worker_portal_token_ttl_minutes,
        )
        # A credential minted by an admin for someone else is an admin write: audit it.
        async with unit_of_work(self.db, org_id) as uow:
            await audit.record(
                uow,
                "iam.worker_portal_link.issue",
                resource_type="worker",
                resource_id=worker_id,
                after={"expires_at": expires},
            )
        return iam_pb2.IssueWorkerPortalTokenResponse(token=token, expires_at=_ts(expires))

    async def VerifyWorkerPortalToken(
        self, request: iam_pb2.VerifyWorkerPortalTokenRequest, context: Any
    ) -> Any:
        claims = portal_tokens.verify(portal_tokens.WORKER, self.settings.worker_portal_secret, request.token)
        return iam_pb2.VerifyWorkerPortalTokenResponse(
            org_id=claims.org_id, worker_id=claims.subject, expires_at=_ts(claims.expires_at)
        )

    async def RequestClientLogin(self, request: iam_pb2.RequestClientLoginRequest, context: Any) -> Any:
        if not request.email:
            raise invalid("email", "is required")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            requested = await client_login.request_login(uow, self.settings, request.email)
        response = iam_pb2.RequestClientLoginResponse(token=requested.token)
        if requested.token:
            response.expires_at.CopyFrom(_ts(requested.expires_at))
        return response


def _uuid_or_none(value: str, field: str) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise invalid(field, "must be a UUID") from None
