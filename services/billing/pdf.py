"""An issued invoice rendered as a PDF (fpdf2): issuer, number, status, dates, bill-to, the lines, and
the totals snapshot with what has been paid and what is still owed. Pure: the caller passes the invoice
and the org's name, time zone and payment figures; nothing here reads a database, a clock or a network.

Choices, and why:

- Font. fpdf2's core fonts (Helvetica...) encode latin-1 only, and client names and descriptions are any
  Unicode ("Łukasz Żółć", "北京"). So a TrueType font is embedded (subset): the file named by the
  environment variable INVOICE_PDF_FONT, else DejaVu Sans from Debian's fonts-dejavu-core at
  /usr/share/fonts/truetype/dejavu (Latin, Greek, Cyrillic and many symbols; no CJK, no colour emoji).
  The bold face is the file's "-Bold" sibling when there is one. Nothing is downloaded at run time. If no
  usable font file is found the PDF is still made, with Helvetica and latin-1 text, and a warning logged.
- Characters the font cannot draw never raise and never become invisible: each is replaced, by its
  compatibility decomposition when the font has that ("ő" -> "o" in latin-1, "ﬁ" -> "fi"), else by "?".
  Control and invisible format characters (bidi overrides, zero-width joiners) are dropped, so a
  description cannot reorder or hide what is drawn. Text is plain: no markdown, and fpdf2's "{nb}"
  total-pages alias is switched off (the total is known from a first layout pass instead), so nothing a
  client typed is ever interpreted.
- Money is integer cents, formatted by libs.common.money ("CAD 1,234.56", as the emails show it):
  never a float, so what is printed is exactly what is stored. Quantities and rates are Decimals
  printed without trailing zeros.
- Dates are ISO (2026-12-02): unambiguous in every locale (Canada writes both d/m and m/d). The issue
  date is issued_at in the org's time zone (UTC for a zone name this machine does not know, as notify does).
- The PDF creation date is issued_at, so rendering the same invoice twice gives the same bytes."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fpdf import FPDF
from fpdf.fonts import FontFace, TTFFont

from libs.common.errors import FailedPrecondition, FieldViolation, invalid
from libs.common.logs import get_logger
from libs.common.money import format_cents
from services.billing.invoices import Invoice
from services.billing.status import InvoiceStatus

log = get_logger(__name__)

FONT_ENV = "INVOICE_PDF_FONT"
# Debian's fonts-dejavu-core (on the dev machines; the image needs the package installed).
DEFAULT_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
FAMILY = "invoice"  # the name the embedded font is registered under
CORE_FAMILY = "helvetica"
REPLACEMENT = "?"  # in every font, latin-1 included; U+FFFD is not

# Letter, as Canadian invoices are printed; millimetres.
MARGIN = 18.0
# Description, quantity, unit price, tax rate, amount: fractions of the page's text width.
COLUMNS = (50, 10, 15, 9, 16)
ALIGN = ("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT")
GREY = (110, 110, 110)
VOID_RED = (200, 30, 30)
# What Helvetica draws: latin-1 less its control ranges.
LATIN1 = frozenset([*range(0x20, 0x7F), *range(0xA0, 0x100)])


@dataclass(frozen=True)
class _Font:
    family: str
    glyphs: Collection[int]  # code points the regular and bold faces both draw


def render_invoice_pdf(
    invoice: Invoice,
    *,
    org_name: str,
    paid_cents: int = 0,
    outstanding_cents: int | None = None,
    time_zone: str = "UTC",
) -> bytes:
    """The invoice as PDF bytes. A DRAFT is refused (409 invoice_not_issued): it has no number and its
    lines may still change. A VOID invoice is rendered, marked VOID on every page, owing nothing unless
    `outstanding_cents` says otherwise. `outstanding_cents` defaults to total - paid (never below 0)."""
    if invoice.status is InvoiceStatus.DRAFT:
        raise FailedPrecondition(
            "cannot render a DRAFT invoice as a PDF: it has no number yet and its lines may still "
            "change; issue it first",
            code="invoice_not_issued",
            violations=[FieldViolation("status", "is DRAFT, must be issued")],
        )
    _check_cents("paid_cents", paid_cents)
    if outstanding_cents is None:
        void = invoice.status is InvoiceStatus.VOID
        outstanding_cents = 0 if void else max(invoice.totals.total_cents - paid_cents, 0)
    _check_cents("outstanding_cents", outstanding_cents)
    zone = _zone(time_zone)
    # Two passes: the first only counts pages, so the footer can say "Page 1 of 3" without fpdf2's
    # "{nb}" alias (which would also replace "{nb}" typed in a description). Layout does not depend on
    # the footer, so both passes break pages alike.
    first = _layout(invoice, org_name, paid_cents, outstanding_cents, zone, total_pages=None)
    return bytes(
        _layout(
            invoice, org_name, paid_cents, outstanding_cents, zone, total_pages=first.pages_count
        ).output()
    )


def format_decimal(value: Decimal) -> str:
    """1.50 -> "1.5", 13.0000 -> "13", 100 -> "100" (never "1E+2")."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class _InvoicePDF(FPDF):
    def __init__(self, void: bool, total_pages: int | None) -> None:
        super().__init__(orientation="portrait", unit="mm", format="letter")
        self.void = void
        self.total_pages = total_pages
        self.face = _load_font(self)
        self.footer_label = ""

    def header(self) -> None:
        if self.void:
            # Drawn first, under the content, on every page: a printed page on its own still says VOID.
            with self.local_context(text_color=(245, 200, 200)):
                self.set_font(self.face.family, "B", 110)
                x, y = self.w / 2 - 60, self.h / 2 + 35
                with self.rotation(45, x=self.w / 2, y=self.h / 2):
                    self.text(x, y, "VOID")
        self.set_xy(self.l_margin, self.t_margin)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.face.family, "", 8)
        self.set_text_color(*GREY)
        pages = f"Page {self.page_no()}" + (f" of {self.total_pages}" if self.total_pages else "")
        self.cell(0, 4, f"{self.footer_label}   {pages}", align="C")
        self.set_text_color(0)


def _layout(
    invoice: Invoice,
    org_name: str,
    paid_cents: int,
    outstanding_cents: int,
    zone: ZoneInfo,
    *,
    total_pages: int | None,
) -> FPDF:
    pdf = _InvoicePDF(_is_void(invoice), total_pages)
    font = pdf.face
    number = invoice.number or "not numbered"
    pdf.footer_label = _clean(f"{number} - {org_name}", font)
    # Off: user text is never a template (see top).
    pdf.alias_nb_pages("")
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(True, margin=18)
    if invoice.issued_at is not None:
        pdf.set_creation_date(_aware(invoice.issued_at))
    pdf.set_title(_clean(f"Invoice {number}", font))
    pdf.set_author(_clean(org_name, font))
    pdf.add_page()

    def text(value: str, *, multiline: bool = False) -> str:
        return _clean(value, font, multiline=multiline)

    epw = pdf.epw
    left_w = epw * 0.55
    right_x = MARGIN + left_w
    right_w = epw - left_w

    # Issuer, left; the invoice's identity, right.
    top = pdf.get_y()
    pdf.set_font(font.family, "B", 15)
    pdf.multi_cell(left_w - 4, 7, text(org_name), align="L", new_x="LMARGIN", new_y="NEXT")
    left_bottom = pdf.get_y()
    pdf.set_xy(right_x, top)
    pdf.set_font(font.family, "B", 15)
    title = f"Invoice {invoice.number}" if invoice.number else "Invoice (not numbered)"
    pdf.multi_cell(right_w, 7, text(title), align="R", new_x="LEFT", new_y="NEXT")
    pdf.ln(1)
    issued = invoice.issued_at.astimezone(zone).date().isoformat() if invoice.issued_at else "not issued"
    for label, value in (
        ("Status", invoice.status.value),
        ("Issue date", issued),
        ("Due date", _date(invoice.due_date)),
    ):
        _pair(pdf, font, right_x, right_w, label, value, bold_value=label == "Status")
    pdf.set_y(max(left_bottom, pdf.get_y()) + 6)

    if _is_void(invoice):
        pdf.set_font(font.family, "B", 12)
        pdf.set_text_color(*VOID_RED)
        pdf.multi_cell(
            epw, 6, "VOID - this invoice has been cancelled.", align="L", new_x="LMARGIN", new_y="NEXT"
        )
        pdf.set_text_color(0)
        pdf.ln(3)

    # Bill to.
    pdf.set_font(font.family, "B", 9)
    pdf.set_text_color(*GREY)
    pdf.cell(epw, 5, "BILL TO", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    pdf.set_font(font.family, "B", 11)
    pdf.multi_cell(left_w, 5.5, text(invoice.client_name), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(font.family, "", 10)
    pdf.multi_cell(left_w, 5, text(invoice.client_email), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)

    # Lines. fpdf2's table wraps long descriptions (a word wider than its column is split), moves a
    # row that does not fit to the next page and repeats the heading row there.
    currency = text(invoice.currency)
    pdf.set_font(font.family, "", 9)
    headings = ("Description", "Qty", f"Price ({currency})", "Tax", f"Amount ({currency})")
    with pdf.table(
        col_widths=COLUMNS,
        text_align=ALIGN,
        borders_layout="HORIZONTAL_LINES",
        headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
        line_height=4.6,
        padding=(1.6, 1.5),
        v_align="TOP",
        first_row_as_headings=True,
    ) as table:
        table.row(headings)
        for item in invoice.items:
            table.row(
                (
                    text(item.description, multiline=True),
                    format_decimal(item.quantity),
                    _amount(item.unit_price_cents),
                    f"{format_decimal(item.tax_rate)}%",
                    _amount(item.amount_cents),
                )
            )

    # Totals, right-aligned under the amount column; kept together on one page.
    totals = invoice.totals
    rows = (
        ("Subtotal", format_cents(totals.subtotal_cents, currency), False),
        (_tax_label(invoice), format_cents(totals.tax_cents, currency), False),
        ("Total", format_cents(totals.total_cents, currency), True),
        ("Paid", format_cents(paid_cents, currency), False),
        ("Balance due", format_cents(outstanding_cents, currency), True),
    )
    row_h = 6.0
    if pdf.get_y() + 4 + row_h * len(rows) + 2 > pdf.page_break_trigger:
        pdf.add_page()
    pdf.ln(4)
    value_w = 40.0
    label_w = 60.0
    x = MARGIN + epw - label_w - value_w
    for label, value, strong in rows:
        if strong:
            pdf.line(x + 10, pdf.get_y(), MARGIN + epw, pdf.get_y())
        pdf.set_x(x)
        pdf.set_font(font.family, "B" if strong else "", 10)
        pdf.cell(label_w, row_h, label, align="R")
        pdf.cell(value_w, row_h, value, align="R", new_x="LMARGIN", new_y="NEXT")
    return pdf


def _pair(
    pdf: FPDF, font: _Font, x: float, width: float, label: str, value: str, *, bold_value: bool
) -> None:
    pdf.set_x(x)
    pdf.set_font(font.family, "", 9)
    pdf.set_text_color(*GREY)
    pdf.cell(width - 38, 5, label, align="R")
    pdf.set_text_color(0)
    pdf.set_font(font.family, "B" if bold_value else "", 9)
    pdf.cell(38, 5, value, align="R", new_x="LEFT", new_y="NEXT")
    pdf.set_x(x)


def _amount(cents: int) -> str:
    """A table cell's money: the currency is in the column heading, so only the number here."""
    return format_cents(cents)


def _tax_label(invoice: Invoice) -> str:
    basis = invoice.totals.tax_rate_basis
    rates = {item.tax_rate for item in invoice.items if item.tax_rate > 0}
    # One rate that the stored amounts reproduce exactly reads as that rate; otherwise (several rates,
    # or a rate whole cents cannot hit) the basis is an effective rate and says so.
    if rates == {basis} or not rates:
        return f"Tax ({format_decimal(basis)}%)"
    return f"Tax (effective {format_decimal(basis)}%)"


def _is_void(invoice: Invoice) -> bool:
    return invoice.status is InvoiceStatus.VOID


def _date(value: date | None) -> str:
    return value.isoformat() if value is not None else "on receipt"


def _aware(moment: datetime) -> datetime:
    # A naive timestamp is taken as UTC (the database stores timestamptz; tests may build naive ones).
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _check_cents(field: str, cents: int) -> None:
    if not isinstance(cents, int) or isinstance(cents, bool) or cents < 0:
        raise invalid(field, "must be a whole number of cents, 0 or more")


def font_files() -> tuple[Path, Path] | None:
    """(regular, bold) TrueType files to embed: INVOICE_PDF_FONT if it names a file, else DejaVu Sans;
    None when neither exists. Read at each render, so the setting can change without a restart."""
    setting = os.environ.get(FONT_ENV, "").strip()
    if setting and not Path(setting).is_file():
        log.warning("invoice_pdf_font_setting_not_a_file", setting=FONT_ENV, path=setting)
    candidates = [Path(setting), DEFAULT_FONT] if setting else [DEFAULT_FONT]
    for regular in candidates:
        if regular.is_file():
            bold = regular.with_name(f"{regular.stem}-Bold{regular.suffix}")
            return regular, bold if bold.is_file() else regular
    return None


def _load_font(pdf: FPDF) -> _Font:
    files = font_files()
    if files is not None:
        regular, bold = files
        try:
            pdf.add_font(FAMILY, "", str(regular))
            pdf.add_font(FAMILY, "B", str(bold))
        except Exception as error:  # a corrupt or unreadable file must not stop the invoice
            log.warning("invoice_pdf_font_unusable", path=str(regular), error=repr(error))
        else:
            faces = [pdf.fonts[key] for key in (FAMILY, f"{FAMILY}B")]
            if all(isinstance(face, TTFFont) for face in faces):
                glyphs = set.intersection(*(set(face.cmap) for face in faces if isinstance(face, TTFFont)))
                return _Font(FAMILY, frozenset(glyphs))
    else:
        log.warning("invoice_pdf_font_missing", path=str(DEFAULT_FONT), setting=FONT_ENV)
    # Helvetica draws latin-1, less its control range.
    return _Font(CORE_FAMILY, LATIN1)


def _clean(value: str, font: _Font, *, multiline: bool = False) -> str:
    """`value` as the font can draw it: NFC, controls and format characters dropped, line breaks kept
    only where a description may have them, anything else the font lacks replaced (see top)."""
    out: list[str] = []
    glyphs = font.glyphs
    for char in unicodedata.normalize("NFC", value.replace("\r\n", "\n").replace("\r", "\n")):
        category = unicodedata.category(char)
        if char == "\n" or category in ("Zl", "Zp"):
            out.append("\n" if multiline else " ")
        elif char == "\t":
            out.append(" ")
        elif category in ("Cc", "Cf"):
            continue
        elif category not in ("Cs", "Co", "Cn") and ord(char) in glyphs:
            out.append(char)
        elif category in ("Mn", "Me"):
            # A combining mark (or an emoji variation selector) the font lacks: its base letter is
            # already drawn, and a "?" after it would read as part of the word.
            continue
        else:
            out.append(_substitute(char, glyphs))
    return "".join(out)


def _substitute(char: str, glyphs: Collection[int]) -> str:
    base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    if base and base != char and all(ord(c) in glyphs for c in base):
        return base
    return REPLACEMENT
