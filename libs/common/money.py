"""Money as people read it, from the integer cents every service stores: "CAD 1,234.56".

One formatter for the suite, so an invoice's PDF, its email and a dunning email show the same amount
the same way. Integer arithmetic only: no amount is ever rounded or passes through a float. Every
currency the suite accepts has two minor units (services/billing/currency.py)."""

from __future__ import annotations


def format_cents(cents: int, currency: str = "") -> str:
    """ "CAD 1,234.56" from 123456 and "cad"; "1,234.56" without a currency; "CAD -2.50" below 0."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{currency.upper()} {sign}{whole:,}.{part:02d}".strip()
