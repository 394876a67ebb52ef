"""The suite's own subscription of an org (seed 002 "Pause/resume playbook", "Billing and usage
reporting"): plans, status, pause and resume, and the usage report with drift."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["subscription"])
