"""Invoice line items and the totals snapshot stored at issuance (seed 002, "Invoice tax snapshots and
reporting"). Pure arithmetic in integer cents; `decimal.Decimal` only for quantities and tax rates.

Rounding, in two places and no others:

- A line's amount (quantity x unit price) is rounded to the cent **half to even**: it is the rule
  booking's estimator already applies (Python's `round()` in services/booking/pricing.py), so a
  line copied from an estimate (1.5 bathrooms at 1503 cents = 2254.5 -> 2254) costs the same on the
  invoice as it did in the estimate.
- Tax is computed **once per invoice for each rate**, on the sum of the line amounts at that rate,
  and rounded **half up** (a fraction of one half cent or more counts as a cent). That is how the
  Excise Tax Act (s. 165.2(2)) rounds GST/HST payable and how Canadian invoices show it: one tax
  amount per rate on the taxable subtotal, not a sum of per-line roundings that can drift by up to
  half a cent per line. It also makes `tax_rate_basis` (the seed's effective rate "derived from the
  stored amounts") as close to the charged rate as whole cents allow.

Tax rates are decimal strings in percent ("13", "5", "9.975"): basis points cannot hold Quebec's
9.975 % QST, and a string never passes through a float.

The snapshot is stored at issuance and never recomputed from later tax settings; the service calls
`recalculate_totals` only when the items of a DRAFT invoice are edited (status.check_items_editable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

from libs.common.errors import FieldViolation, InvalidArgument, invalid

# Bounds that catch a typo before it becomes an invoice (the same price ceiling as booking's pricing).
MAX_UNIT_PRICE_CENTS = 10_000_000
MAX_QUANTITY = Decimal(10_000)
MAX_DESCRIPTION = 500
QUANTITY_PLACES = 2  # hours to the quarter (1.25) and booking's half bathrooms both fit
RATE_PLACES = 4  # 9.975 % needs three; a fourth leaves room without inviting noise
MAX_RATE_PERCENT = Decimal(100)

CENT = Decimal(1)
# tax_rate_basis is kept to the precision a rate may be given in (four places of a percent).
BASIS_QUANTUM = Decimal(1).scaleb(-RATE_PLACES)


@dataclass(frozen=True)
class LineItem:
    description: str
    quantity: Decimal
    unit_price_cents: int
    tax_rate: Decimal  # percent: Decimal("13") is 13 %

    @property
    def amount_cents(self) -> int:
        """quantity x unit price, to the cent, half to even (as booking's estimator rounds)."""
        return int((self.quantity * self.unit_price_cents).quantize(CENT, rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True)
class Totals:
    subtotal_cents: int  # every line's amount
    taxable_subtotal_cents: int  # the amounts of lines with a positive tax rate
    tax_cents: int
    total_cents: int  # subtotal + tax
    tax_rate_basis: Decimal  # effective percent: tax / taxable subtotal x 100, 4 places; 0 if untaxed


def line_item(
    description: str,
    quantity: Decimal | int | str,
    unit_price_cents: int,
    tax_rate: Decimal | int | str,
    *,
    field: str = "item",
) -> LineItem:
    """A checked line, or InvalidArgument naming every bad field (under `field`, e.g. "items.2")."""
    problems: list[FieldViolation] = []
    qty = _decimal(quantity)
    rate = _decimal(tax_rate)
    if not isinstance(description, str) or not description.strip():
        problems.append(FieldViolation(f"{field}.description", "must not be blank"))
    elif len(description) > MAX_DESCRIPTION:
        problems.append(
            FieldViolation(f"{field}.description", f"must be at most {MAX_DESCRIPTION} characters")
        )
    if qty is None or not 0 < qty <= MAX_QUANTITY or _places(qty) > QUANTITY_PLACES:
        problems.append(
            FieldViolation(
                f"{field}.quantity",
                f"must be a number above 0 and at most {MAX_QUANTITY} with at most "
                f"{QUANTITY_PLACES} decimal places",
            )
        )
    if (
        not isinstance(unit_price_cents, int)
        or isinstance(unit_price_cents, bool)
        or not 0 <= unit_price_cents <= MAX_UNIT_PRICE_CENTS
    ):
        problems.append(
            FieldViolation(
                f"{field}.unit_price_cents",
                f"must be a whole number of cents from 0 to {MAX_UNIT_PRICE_CENTS}",
            )
        )
    if not _rate_ok(rate):
        problems.append(FieldViolation(f"{field}.tax_rate", RATE_RULE))
    if problems:
        raise InvalidArgument.of(problems)
    assert qty is not None and rate is not None  # narrowed by the checks above
    return LineItem(description.strip(), qty, unit_price_cents, rate)


RATE_RULE = f"must be a percentage from 0 to 100 with at most {RATE_PLACES} decimal places"


def parse_tax_rate(value: Decimal | int | str, field: str = "tax_rate") -> Decimal:
    """A tax rate in percent ("13", "9.975") as a line takes it, or invalid(field) saying what it must be:
    for the org's default rate and INVOICE_DEFAULT_TAX_RATE, with the rule lines follow."""
    rate = _decimal(value)
    if rate is None or not _rate_ok(rate):
        raise invalid(field, RATE_RULE)
    return rate


def _rate_ok(rate: Decimal | None) -> bool:
    return rate is not None and 0 <= rate <= MAX_RATE_PERCENT and _places(rate) <= RATE_PLACES


def recalculate_totals(items: Sequence[LineItem]) -> Totals:
    """The snapshot of a draft's items. Every item is checked again (a LineItem can be built without
    line_item), so a bad one is refused as "items.<index>.<field>" instead of being summed."""
    checked = [
        line_item(i.description, i.quantity, i.unit_price_cents, i.tax_rate, field=f"items.{n}")
        for n, i in enumerate(items)
    ]
    subtotal = sum(item.amount_cents for item in checked)
    taxable_by_rate: dict[Decimal, int] = {}
    for item in checked:
        if item.tax_rate > 0:
            # Decimal("13") and Decimal("13.00") are equal keys, so one rate is one group however written.
            taxable_by_rate[item.tax_rate] = taxable_by_rate.get(item.tax_rate, 0) + item.amount_cents
    tax = sum(tax_on(amount, rate) for rate, amount in taxable_by_rate.items())
    taxable = sum(taxable_by_rate.values())
    return Totals(subtotal, taxable, tax, subtotal + tax, effective_rate(tax, taxable))


def tax_on(amount_cents: int, rate_percent: Decimal) -> int:
    """The tax on an amount at one rate, in cents, half up (ETA s. 165.2(2))."""
    with localcontext() as ctx:
        ctx.prec = 40  # exact for any amount and rate the bounds allow, before the one rounding
        exact = Decimal(amount_cents) * rate_percent / 100
        return int(exact.quantize(CENT, rounding=ROUND_HALF_UP))


def effective_rate(tax_cents: int, taxable_subtotal_cents: int) -> Decimal:
    """The seed's tax_rate_basis: the rate the stored amounts imply, in percent to four places.
    An invoice with nothing taxable has 0 (never a division by zero, never "taxable")."""
    if taxable_subtotal_cents == 0:
        return Decimal(0).quantize(BASIS_QUANTUM)
    with localcontext() as ctx:
        ctx.prec = 40
        rate = Decimal(tax_cents) * 100 / Decimal(taxable_subtotal_cents)
        return rate.quantize(BASIS_QUANTUM, rounding=ROUND_HALF_UP)


def _decimal(value: object) -> Decimal | None:
    """A finite Decimal from a Decimal, an int or a numeric string; None for anything else. Floats
    are refused: 0.1 as a float is not 0.1, and money rules must not depend on that."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None


def _places(number: Decimal) -> int:
    exponent = number.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0
