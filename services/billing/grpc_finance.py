"""The finance-books part of the billing servicer: expenses, GST instalments, the GST export ZIP and the
profit-and-loss and GST reports, all from the stored invoice snapshots."""

from __future__ import annotations

from libs.common.db import Database
from services.billing.peers import Peers
from services.billing.settings import BillingSettings


class FinanceApi:
    db: Database
    settings: BillingSettings
    peers: Peers
