"""(being built: issue 16)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
