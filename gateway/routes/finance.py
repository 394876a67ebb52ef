"""Finance books and tax reports (seed 003 "Finance tax exports"): expenses, GST instalments, the GST
export ZIP, and the profit-and-loss and GST reports, for finance staff and the Basic Auth accountant."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["finance"])
