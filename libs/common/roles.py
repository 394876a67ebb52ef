"""The suite's roles and the groups of them that routes and services authorise by.

`Role` mirrors `cws.common.v1.Role` (the test in libs/common/tests/test_kit.py keeps the two equal);
members are strings, so `ctx.role in MANAGERS` and `require_role(*DISPATCH)` read as before."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    DISPATCHER = "DISPATCHER"
    FINANCE = "FINANCE"
    VIEWER = "VIEWER"
    WORKER = "WORKER"
    CLIENT = "CLIENT"


# Staff of an org, who sign in to the admin side.
STAFF: tuple[Role, ...] = (Role.OWNER, Role.ADMIN, Role.DISPATCHER, Role.FINANCE, Role.VIEWER)
# Who manages the org: users, pricing, dead letters, settings.
MANAGERS: tuple[Role, ...] = (Role.OWNER, Role.ADMIN)
# Who runs the day: bookings, assignments, teams and workers.
DISPATCH: tuple[Role, ...] = (Role.OWNER, Role.ADMIN, Role.DISPATCHER)
# Who reads the numbers: analytics, finance reports.
ANALYSTS: tuple[Role, ...] = (Role.OWNER, Role.ADMIN, Role.FINANCE)
# Who handles money: invoices, payments, refunds, reconcile (seed 002: "finance for invoices").
FINANCE_STAFF: tuple[Role, ...] = (Role.OWNER, Role.ADMIN, Role.FINANCE)
