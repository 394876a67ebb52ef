"""The usage part of the billing servicer: the usage report, counters recorded from domain events
compared with the truth from the owning services (drift)."""

from __future__ import annotations

from libs.common.db import Database
from services.billing.peers import Peers
from services.billing.settings import BillingSettings


class UsageApi:
    db: Database
    settings: BillingSettings
    peers: Peers
