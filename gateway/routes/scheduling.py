"""Filled in by its own change; included by gateway/app.py."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
