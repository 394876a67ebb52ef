"""/v1/iam/users: org-scoped onboarding, password resets and session rotation (seed 002)."""

from __future__ import annotations

from typing import Any

from cws.iam.v1 import iam_pb2
from fastapi import APIRouter, Depends, Query

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.principal import Principal
from gateway.problems import uuid_param
from gateway.routes import convert
from gateway.schemas import CreateUserIn, RevokedOut, UsersOut, UserWithPasswordOut
from gateway.stubs import Iam
from libs.common.roles import MANAGERS

router = APIRouter(prefix="/v1/iam/users", tags=["iam"], dependencies=[ADMIN])


@router.get("", response_model=UsersOut, summary="List the users of your org")
async def list_users(
    iam: Iam,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    principal: Principal = Depends(require_roles(*MANAGERS)),
) -> dict[str, Any]:
    response = await iam.ListUsers(iam_pb2.ListUsersRequest(limit=limit, offset=offset))
    return {"users": [convert.user(u) for u in response.users], "total": response.total}


@router.post(
    "",
    response_model=UserWithPasswordOut,
    status_code=201,
    summary="Create a user; the temporary password is shown once",
)
async def create_user(
    body: CreateUserIn, iam: Iam, principal: Principal = Depends(require_roles(*MANAGERS))
) -> dict[str, Any]:
    response = await iam.CreateUser(
        iam_pb2.CreateUserRequest(email=body.email, full_name=body.full_name, role=body.role)
    )
    return {"user": convert.user(response.user), "temp_password": response.temp_password}


@router.post(
    "/{user_id}/reset-password",
    response_model=UserWithPasswordOut,
    summary="Issue a new temporary password (shown once) and end the user's sessions",
)
async def reset_password(
    user_id: str, iam: Iam, principal: Principal = Depends(require_roles(*MANAGERS))
) -> dict[str, Any]:
    response = await iam.ResetUserPassword(
        iam_pb2.ResetUserPasswordRequest(user_id=uuid_param(user_id, "user_id"))
    )
    return {"user": convert.user(response.user), "temp_password": response.temp_password}


@router.post("/{user_id}/logout", response_model=RevokedOut, summary="Revoke every session of a user")
async def logout_user(
    user_id: str, iam: Iam, principal: Principal = Depends(require_roles(*MANAGERS))
) -> dict[str, Any]:
    response = await iam.LogoutUser(iam_pb2.LogoutUserRequest(user_id=uuid_param(user_id, "user_id")))
    return {"revoked_sessions": response.revoked_sessions}
