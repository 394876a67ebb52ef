"""The ISO 4217 currencies billing accepts. Every one has 2 minor units (100 cents to the unit),
because all billing arithmetic is in integer cents: a 0-unit currency (JPY) or a 3-unit one (KWD)
would be mis-scaled by a factor of 100 or 10, so it is refused rather than accepted and wrong."""

from __future__ import annotations

from libs.common.errors import invalid

# code -> minor units; adding a currency here is a claim that it has exactly 2.
MINOR_UNITS: dict[str, int] = {"AUD": 2, "CAD": 2, "EUR": 2, "GBP": 2, "USD": 2}
ACCEPTED = frozenset(MINOR_UNITS)


def normalise_currency(code: str) -> str:
    """The code in upper case ("cad " -> "CAD"), or invalid("currency") naming the accepted ones."""
    cleaned = code.strip().upper() if isinstance(code, str) else ""
    if cleaned not in ACCEPTED:
        raise invalid("currency", f"must be one of {', '.join(sorted(ACCEPTED))}")
    return cleaned
