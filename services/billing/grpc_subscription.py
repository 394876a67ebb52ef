"""The subscription part of the billing servicer: the platform's plans and the org's plan and status,
pause and resume (seed 002's playbook)."""

from __future__ import annotations

from libs.common.db import Database
from services.billing.peers import Peers
from services.billing.settings import BillingSettings


class SubscriptionApi:
    db: Database
    settings: BillingSettings
    peers: Peers
