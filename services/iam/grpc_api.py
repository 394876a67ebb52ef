"""The IAM servicer: proto in, domain call, proto out. No SQL and no business rules here.

Each method owns its transaction: it opens the unit of work, in the caller's org or in none when the
domain finds the org itself (a refresh token names it, a login finds it by email), and hands it to
the domain. The exceptions: whatever judges a password or a TOTP code (Login, Refresh, ChangePassword
and the step-up of the TOTP calls): a refusal there rolls back and is then counted as a failed login
in a transaction of its own, so these run under sessions.counting_failures (or sessions.login, which
does the same), which says why; and ConfirmSignup, whose org the token names (signups.confirm)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeAlias

import grpc
from cws.iam.v1 import iam_pb2, iam_pb2_grpc
from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from libs.common import context as request_context
from libs.common.convert import page, parse_id, to_ts
from libs.common.db import Database, unit_of_work
from libs.common.errors import FailedPrecondition, PermissionDenied, Unauthenticated, invalid
from libs.common.roles import DISPATCH, MANAGERS, STAFF, Role
from services.iam import (
    accounts,
    audit,
    breakglass,
    client_login,
    mfa,
    portal_links,
    portal_sessions,
    sessions,
    signups,
    temp_passwords,
)
from services.iam.models import AuditEntry, User
from services.iam.settings import IamSettings

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

# ListOrgs walks every org for the scheduler: bigger pages than the admin lists.
ORG_PAGE_DEFAULT, ORG_PAGE_MAX = 500, 1000


def _epoch_ts(seconds: int) -> Timestamp:
    """Portal tokens expire at a JWT `exp`, in epoch seconds."""
    return to_ts(datetime.fromtimestamp(seconds, UTC))


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


def _user(user: User) -> iam_pb2.User:
    return iam_pb2.User(
        id=str(user.id),
        org_id=str(user.org_id),
        email=user.email,
        full_name=user.full_name,
        role=user.role,
        totp_enabled=user.totp_enabled,
        must_change_password=user.must_change_password,
        active=user.active,
        created_at=to_ts(user.created_at),
    )


def _audit_log(entry: AuditEntry) -> iam_pb2.AuditLog:
    return iam_pb2.AuditLog(
        id=str(entry.id),
        org_id=str(entry.org_id),
        actor=entry.actor,
        role=entry.role,
        action=entry.action,
        resource_type=entry.resource_type,
        resource_id=entry.resource_id,
        before=_struct(entry.before),
        after=_struct(entry.after),
        request_id=entry.request_id,
        break_glass_reason=entry.break_glass_reason or "",
        break_glass_session_id=str(entry.break_glass_session_id or ""),
        created_at=to_ts(entry.created_at),
    )


CLIENT_PORTAL = portal_sessions.KINDS[portal_sessions.CLIENT]
WORKER_PORTAL = portal_sessions.KINDS[portal_sessions.WORKER]
_PORTAL_KINDS = {iam_pb2.PORTAL_KIND_CLIENT: CLIENT_PORTAL, iam_pb2.PORTAL_KIND_WORKER: WORKER_PORTAL}


def _portal_kind(kind: iam_pb2.PortalKind.ValueType) -> portal_sessions.Kind:
    if kind not in _PORTAL_KINDS:
        raise invalid("kind", "must be PORTAL_KIND_CLIENT or PORTAL_KIND_WORKER")
    return _PORTAL_KINDS[kind]


def _portal_session(session: portal_sessions.PortalSession) -> iam_pb2.PortalSession:
    return iam_pb2.PortalSession(
        session_id=str(session.id),
        org_id=str(session.org_id),
        kind=iam_pb2.PORTAL_KIND_CLIENT
        if session.kind == portal_sessions.CLIENT
        else iam_pb2.PORTAL_KIND_WORKER,
        subject=session.subject,
        expires_at=to_ts(session.expires_at),
    )


# The only caller of the hand-offs (a temporary password, a sign-up token): it emails them.
NOTIFY = "service:notify"


def _require_notify() -> None:
    """A suite service's call, and that service is notify (its own key signed the call)."""
    if request_context.require_service().principal_id != NOTIFY:
        raise PermissionDenied("only the notify service may claim this", code="service_only")


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

    # --- sessions ------------------------------------------------------------------------------

    async def Login(self, request: iam_pb2.LoginRequest, context: Context) -> iam_pb2.LoginResponse:
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

    async def Refresh(self, request: iam_pb2.RefreshRequest, context: Context) -> iam_pb2.RefreshResponse:
        if not request.refresh_token:
            raise invalid("refresh_token", "is required")
        refreshed = await sessions.counting_failures(
            self.db,
            self.settings,
            None,
            lambda uow: sessions.refresh(
                uow, self.settings, refresh_token=request.refresh_token, totp_code=request.totp_code
            ),
        )
        # After the commit: a reused token is refused only once its session's revocation is stored.
        return iam_pb2.RefreshResponse(tokens=_tokens(refreshed.issued()))

    async def Logout(self, request: iam_pb2.LogoutRequest, context: Context) -> iam_pb2.LogoutResponse:
        ctx = request_context.current()
        async with unit_of_work(self.db) as uow:
            await sessions.logout(
                uow, org_id=ctx.org_id, session_id=ctx.session_id, refresh_token=request.refresh_token
            )
        return iam_pb2.LogoutResponse()

    async def CheckSession(
        self, request: iam_pb2.CheckSessionRequest, context: Context
    ) -> iam_pb2.CheckSessionResponse:
        ctx = request_context.current()
        if not ctx.org_id:
            raise Unauthenticated("authentication required")
        async with unit_of_work(self.db, ctx.org_id) as uow:
            active = await sessions.is_active(uow, request.session_id)
        return iam_pb2.CheckSessionResponse(active=active)

    # --- orgs and accounts ---------------------------------------------------------------------

    async def ListOrgs(self, request: iam_pb2.ListOrgsRequest, context: Context) -> iam_pb2.ListOrgsResponse:
        request_context.require_service()
        limit, _ = page(request.limit, 0, default=ORG_PAGE_DEFAULT, maximum=ORG_PAGE_MAX)
        after = parse_id(request.after_org_id, "after_org_id") if request.after_org_id else None
        async with unit_of_work(self.db) as uow:
            found = await accounts.list_orgs(uow, after=after, limit=limit)
        return iam_pb2.ListOrgsResponse(
            orgs=[iam_pb2.OrgSummary(org_id=str(o.id), name=o.name, time_zone=o.time_zone) for o in found]
        )

    def _check_signup_enabled(self) -> None:
        if not self.settings.signup_enabled:
            raise FailedPrecondition("sign-up is disabled on this installation", code="signup_disabled")

    async def Signup(self, request: iam_pb2.SignupRequest, context: Context) -> iam_pb2.SignupResponse:
        self._check_signup_enabled()
        async with unit_of_work(self.db) as uow:
            await signups.request_signup(
                uow,
                self.settings,
                org_name=request.org_name,
                email=request.email,
                password=request.password,
                full_name=request.full_name,
                time_zone=request.time_zone or "UTC",
            )
        return iam_pb2.SignupResponse()

    async def ConfirmSignup(
        self, request: iam_pb2.ConfirmSignupRequest, context: Context
    ) -> iam_pb2.ConfirmSignupResponse:
        self._check_signup_enabled()
        if not request.token:
            raise invalid("token", "is required")
        issued = await signups.confirm(
            self.db, self.settings, token=request.token, client_ip=request_context.current().client_ip
        )
        return iam_pb2.ConfirmSignupResponse(tokens=_tokens(issued))

    async def IssueSignupToken(
        self, request: iam_pb2.IssueSignupTokenRequest, context: Context
    ) -> iam_pb2.IssueSignupTokenResponse:
        _require_notify()
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            issued = await signups.issue_token(uow, self.settings, request.signup_id)
        return iam_pb2.IssueSignupTokenResponse(token=issued.token, expires_at=to_ts(issued.expires_at))

    async def ClaimTemporaryPassword(
        self, request: iam_pb2.ClaimTemporaryPasswordRequest, context: Context
    ) -> iam_pb2.ClaimTemporaryPasswordResponse:
        _require_notify()
        user_id = parse_id(request.user_id, "user_id")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            password = await temp_passwords.claim(
                uow, user_id=user_id, auth_secrets=self.settings.auth_secret_keys
            )
        return iam_pb2.ClaimTemporaryPasswordResponse(
            found=password is not None, temp_password=password or ""
        )

    async def ChangePassword(
        self, request: iam_pb2.ChangePasswordRequest, context: Context
    ) -> iam_pb2.ChangePasswordResponse:
        ctx = _signed_in_user()
        await sessions.counting_failures(
            self.db,
            self.settings,
            ctx.org_id,
            lambda uow: accounts.change_password(
                uow,
                self.settings,
                user_id=ctx.principal_id,
                session_id=ctx.session_id,
                current=request.current_password,
                new=request.new_password,
            ),
        )
        return iam_pb2.ChangePasswordResponse()

    async def ListUsers(
        self, request: iam_pb2.ListUsersRequest, context: Context
    ) -> iam_pb2.ListUsersResponse:
        request_context.require_role(*MANAGERS)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            users, total = await accounts.list_users(uow, limit=limit, offset=offset)
        return iam_pb2.ListUsersResponse(users=[_user(u) for u in users], total=total)

    async def CreateUser(
        self, request: iam_pb2.CreateUserRequest, context: Context
    ) -> iam_pb2.CreateUserResponse:
        ctx = request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            user, temp = await accounts.create_user(
                uow,
                self.settings,
                actor_role=ctx.role,
                email=request.email,
                full_name=request.full_name,
                role=request.role,
            )
        return iam_pb2.CreateUserResponse(user=_user(user), temp_password=temp)

    async def ResetUserPassword(
        self, request: iam_pb2.ResetUserPasswordRequest, context: Context
    ) -> iam_pb2.ResetUserPasswordResponse:
        ctx = request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            user, temp = await accounts.reset_password(
                uow, self.settings, actor_role=ctx.role, user_id=request.user_id
            )
        return iam_pb2.ResetUserPasswordResponse(user=_user(user), temp_password=temp)

    async def LogoutUser(
        self, request: iam_pb2.LogoutUserRequest, context: Context
    ) -> iam_pb2.LogoutUserResponse:
        ctx = request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            revoked = await accounts.logout_user(uow, actor_role=ctx.role, user_id=request.user_id)
        return iam_pb2.LogoutUserResponse(revoked_sessions=revoked)

    # --- two-factor ----------------------------------------------------------------------------

    async def EnrollTotp(
        self, request: iam_pb2.EnrollTotpRequest, context: Context
    ) -> iam_pb2.EnrollTotpResponse:
        ctx = _signed_in_user()
        enrolment = await sessions.counting_failures(
            self.db,
            self.settings,
            ctx.org_id,
            lambda uow: mfa.enroll(
                uow, self.settings, ctx.principal_id, current_password=request.current_password
            ),
        )
        return iam_pb2.EnrollTotpResponse(secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri)

    async def VerifyTotp(
        self, request: iam_pb2.VerifyTotpRequest, context: Context
    ) -> iam_pb2.VerifyTotpResponse:
        ctx = _signed_in_user()
        issued, revoked = await sessions.counting_failures(
            self.db,
            self.settings,
            ctx.org_id,
            lambda uow: mfa.verify(
                uow,
                self.settings,
                user_id=ctx.principal_id,
                session_id=ctx.session_id,
                code=request.code,
                current_password=request.current_password,
            ),
        )
        return iam_pb2.VerifyTotpResponse(tokens=_tokens(issued), revoked_sessions=revoked)

    async def DisableTotp(
        self, request: iam_pb2.DisableTotpRequest, context: Context
    ) -> iam_pb2.DisableTotpResponse:
        ctx = request_context.require_role(Role.OWNER)
        target = request.user_id or ctx.principal_id
        # Step-up for the acting user: a signed-in OWNER gives their own password; a Basic Auth
        # OWNER's request carried its password already; nobody else acts here.
        if ctx.auth_method == request_context.AuthMethod.Value("AUTH_METHOD_BASIC"):
            actor: str | None = None
        else:
            actor = _signed_in_user().principal_id
        revoked = await sessions.counting_failures(
            self.db,
            self.settings,
            request_context.current_org_id(),
            lambda uow: mfa.disable(
                uow,
                self.settings,
                actor_role=ctx.role,
                actor_user_id=actor,
                current_password=request.current_password,
                target_user_id=target,
            ),
        )
        return iam_pb2.DisableTotpResponse(revoked_sessions=revoked)

    # --- break-glass and the audit log ---------------------------------------------------------

    async def StartBreakGlass(
        self, request: iam_pb2.StartBreakGlassRequest, context: Context
    ) -> iam_pb2.StartBreakGlassResponse:
        request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            started = await breakglass.start(
                uow, self.settings, reason=request.reason, ttl_minutes=request.ttl_minutes
            )
        return iam_pb2.StartBreakGlassResponse(
            token=started.token, expires_at=to_ts(started.expires_at), session_id=str(started.session_id)
        )

    async def VerifyBreakGlass(
        self, request: iam_pb2.VerifyBreakGlassRequest, context: Context
    ) -> iam_pb2.VerifyBreakGlassResponse:
        request_context.require_role(*STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await breakglass.verify(uow, request.token)
        return iam_pb2.VerifyBreakGlassResponse(
            session_id=str(found.session_id), reason=found.reason, expires_at=to_ts(found.expires_at)
        )

    async def ListAuditLogs(
        self, request: iam_pb2.ListAuditLogsRequest, context: Context
    ) -> iam_pb2.ListAuditLogsResponse:
        request_context.require_role(*MANAGERS)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            entries = await audit.list_entries(uow, limit=limit, offset=offset, action=request.action)
        return iam_pb2.ListAuditLogsResponse(entries=[_audit_log(e) for e in entries])

    # --- portal tokens -------------------------------------------------------------------------

    async def IssueClientPortalToken(
        self, request: iam_pb2.IssueClientPortalTokenRequest, context: Context
    ) -> iam_pb2.IssueClientPortalTokenResponse:
        request_context.require_role(*DISPATCH)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            issued = await portal_links.issue_client_token(
                uow,
                self.settings,
                email=request.email,
                client_id=request.client_id,
                ttl_minutes=request.ttl_minutes,
            )
        return iam_pb2.IssueClientPortalTokenResponse(
            token=issued.token, expires_at=_epoch_ts(issued.expires_at)
        )

    async def VerifyClientPortalToken(
        self, request: iam_pb2.VerifyClientPortalTokenRequest, context: Context
    ) -> iam_pb2.VerifyClientPortalTokenResponse:
        async with unit_of_work(self.db) as uow:
            claims = await portal_sessions.check_link(uow, self.settings, CLIENT_PORTAL, request.token)
        return iam_pb2.VerifyClientPortalTokenResponse(
            org_id=claims.org_id,
            client_id=claims.subject,
            email=claims.email,
            expires_at=_epoch_ts(claims.expires_at),
        )

    async def IssueWorkerPortalToken(
        self, request: iam_pb2.IssueWorkerPortalTokenRequest, context: Context
    ) -> iam_pb2.IssueWorkerPortalTokenResponse:
        request_context.require_role(*DISPATCH)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            issued = await portal_links.issue_worker_token(
                uow, self.settings, worker_id=request.worker_id, ttl_minutes=request.ttl_minutes
            )
        return iam_pb2.IssueWorkerPortalTokenResponse(
            token=issued.token, expires_at=_epoch_ts(issued.expires_at)
        )

    async def VerifyWorkerPortalToken(
        self, request: iam_pb2.VerifyWorkerPortalTokenRequest, context: Context
    ) -> iam_pb2.VerifyWorkerPortalTokenResponse:
        async with unit_of_work(self.db) as uow:
            claims = await portal_sessions.check_link(uow, self.settings, WORKER_PORTAL, request.token)
        return iam_pb2.VerifyWorkerPortalTokenResponse(
            org_id=claims.org_id, worker_id=claims.subject, expires_at=_epoch_ts(claims.expires_at)
        )

    async def RevokeWorkerPortalAccess(
        self, request: iam_pb2.RevokeWorkerPortalAccessRequest, context: Context
    ) -> iam_pb2.RevokeWorkerPortalAccessResponse:
        request_context.require_role(*DISPATCH)  # who may issue a worker link may end the access
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            revoked = await portal_links.revoke_worker_access(uow, worker_id=request.worker_id)
        return iam_pb2.RevokeWorkerPortalAccessResponse(
            revoked_sessions=revoked.sessions, revoked_links=revoked.links
        )

    # --- portal sessions -----------------------------------------------------------------------

    async def RedeemPortalLink(
        self, request: iam_pb2.RedeemPortalLinkRequest, context: Context
    ) -> iam_pb2.RedeemPortalLinkResponse:
        kind = _portal_kind(request.kind)
        if not request.link_token:
            raise invalid("link_token", "is required")
        async with unit_of_work(self.db) as uow:  # the link names its org
            session, token = await portal_sessions.open_session(uow, self.settings, kind, request.link_token)
        return iam_pb2.RedeemPortalLinkResponse(session=_portal_session(session), session_token=token)

    async def CheckPortalSession(
        self, request: iam_pb2.CheckPortalSessionRequest, context: Context
    ) -> iam_pb2.CheckPortalSessionResponse:
        kind = _portal_kind(request.kind)
        async with unit_of_work(self.db) as uow:  # the token names its org
            session = await portal_sessions.check_session(uow, kind, request.session_token)
        return iam_pb2.CheckPortalSessionResponse(session=_portal_session(session))

    async def RevokePortalSession(
        self, request: iam_pb2.RevokePortalSessionRequest, context: Context
    ) -> iam_pb2.RevokePortalSessionResponse:
        async with unit_of_work(self.db) as uow:
            revoked = await portal_sessions.end_session(uow, request.session_token)
        return iam_pb2.RevokePortalSessionResponse(revoked=revoked)

    async def RequestClientLogin(
        self, request: iam_pb2.RequestClientLoginRequest, context: Context
    ) -> iam_pb2.RequestClientLoginResponse:
        if not request.email:
            raise invalid("email", "is required")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            requested = await client_login.request_login(uow, self.settings, request.email)
        response = iam_pb2.RequestClientLoginResponse(token=requested.token)
        if requested.token:
            response.expires_at.CopyFrom(_epoch_ts(requested.expires_at))
        return response
