"""The accounting part of the billing servicer: the accounting CSV (keyset pages of snapshot rows, for
the gateway to stream) and the monthly `accounting-export` run for the jobs service."""

from __future__ import annotations

from libs.common.db import Database
from services.billing.peers import Peers
from services.billing.settings import BillingSettings


class AccountingApi:
    db: Database
    settings: BillingSettings
    peers: Peers
