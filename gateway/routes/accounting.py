"""The accounting CSV for finance staff (seed 002 "Accounting export v1"), streamed page by page from
billing as it is read, and the monthly exports the `accounting-export` job kept for review."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["accounting"])
