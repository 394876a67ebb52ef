"""The invoice PDF, read back with pypdf: what a client sees (number, names, lines, totals, dates), page
breaks, Unicode, and the refusals and fallbacks. No database: invoices are built directly."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pypdf
import pytest

from libs.common.errors import FailedPrecondition, InvalidArgument
from services.billing import pdf as invoice_pdf
from services.billing.invoices import Invoice
from services.billing.pdf import LATIN1, render_invoice_pdf
from services.billing.status import InvoiceStatus
from services.billing.totals import LineItem, line_item, recalculate_totals

ISSUED_AT = datetime(2026, 12, 2, 3, 30, tzinfo=UTC)  # 2026-12-01 22:30 in Toronto
DUE = date(2027, 1, 1)
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
needs_font = pytest.mark.skipif(invoice_pdf.font_files() is None, reason="no Unicode font on this machine")


def lines() -> list[LineItem]:
    # 100.00 + 15.00 (untaxed) + 15.00 = 130.00; 13 % of the taxable 115.00 is 14.95; total 144.95.
    return [
        line_item("Standard clean, 3 bedrooms", "1", 10_000, "13"),
        line_item("Supplies", "2", 750, "0"),
        line_item("Window add-on", "1.5", 1_000, "13"),
    ]


def invoice(
    items: list[LineItem] | None = None,
    *,
    status: InvoiceStatus = InvoiceStatus.SENT,
    client_name: str = "Zoë Côté",
    number: str | None = "INV-000001",
    issued_at: datetime | None = ISSUED_AT,
) -> Invoice:
    chosen = lines() if items is None else items
    return Invoice(
        id=uuid.uuid4(),
        number=number,
        status=status,
        currency="CAD",
        client_name=client_name,
        client_email="zoe@example.com",
        booking_id=None,
        issued_at=issued_at,
        due_date=DUE,
        totals=recalculate_totals(chosen),
        items=tuple(chosen),
    )


def pages(data: bytes) -> list[str]:
    assert data.startswith(b"%PDF-")
    return [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages]


def flat(text: str) -> str:
    """Whitespace collapsed, so text wrapped across lines of a cell compares as written."""
    return " ".join(text.split())


def render(inv: Invoice, **kwargs: object) -> str:
    options: dict[str, object] = {"org_name": "Sparkle Cleaning Co.", **kwargs}
    return "\n".join(pages(render_invoice_pdf(inv, **options)))  # type: ignore[arg-type]


def test_issued_invoice_shows_number_parties_lines_totals_and_dates():
    text = render(invoice(), paid_cents=5_000)
    assert "Sparkle Cleaning Co." in text
    assert "Invoice INV-000001" in text
    assert "SENT" in text
    assert "Zoë Côté" in text
    assert "zoe@example.com" in text
    for item in lines():
        assert item.description in text
    for line_amount in ("100.00", "7.50", "15.00", "10.00"):
        assert line_amount in text
    assert "Subtotal CAD 130.00" in text
    assert "Tax (13%) CAD 14.95" in text
    assert "Total CAD 144.95" in text
    assert "Paid CAD 50.00" in text
    assert "Balance due CAD 94.95" in text
    assert "Due date 2027-01-01" in text
    assert "Issue date 2026-12-02" in text  # UTC by default


def test_issue_date_is_in_the_orgs_time_zone():
    assert "Issue date 2026-12-01" in render(invoice(), time_zone="America/Toronto")
    assert "Issue date 2026-12-02" in render(invoice(), time_zone="Asia/Tokyo")
    # A zone this machine does not know falls back to UTC rather than failing the PDF.
    assert "Issue date 2026-12-02" in render(invoice(), time_zone="Mars/Olympus_Mons")


def test_balance_due_defaults_to_total_less_paid_and_may_be_given():
    assert "Balance due CAD 144.95" in render(invoice())
    assert "Balance due CAD 0.00" in render(invoice(), paid_cents=20_000)  # overpaid: nothing owed
    assert "Balance due CAD 12.34" in render(invoice(), paid_cents=100, outstanding_cents=1_234)


def test_several_tax_rates_show_the_effective_rate():
    items = [line_item("Clean", "1", 10_000, "13"), line_item("Quebec add-on", "1", 10_000, "9.975")]
    # 13.00 + 9.975 (9.98, half up) = 22.98 tax on 200.00 taxable: 11.49 %.
    assert "Tax (effective 11.49%) CAD 22.98" in render(invoice(items))


def test_a_hundred_long_lines_paginate_with_the_heading_repeated():
    filler = "window frames and sills wiped " * 16  # about 500 characters, as long as a description may be
    items = [line_item(f"Line {n:03d} {filler}"[:500], "1", 100, "13") for n in range(1, 101)]
    texts = pages(render_invoice_pdf(invoice(items), org_name="Sparkle Cleaning Co."))
    assert len(texts) > 1
    assert "Line 100" in texts[-1]
    assert flat(items[-1].description) in flat(texts[-1])  # the whole last description, not cut off
    assert "Total CAD 113.00" in texts[-1]  # 100 x 1.00 + 13 % tax
    for n, text in enumerate(texts, start=1):
        assert f"Page {n} of {len(texts)}" in text
        assert "Description" in text  # the table's heading row on every page


@needs_font
def test_unicode_names_and_descriptions_come_back():
    items = [line_item("Ménage à fond, Œuvre Żółć", "1", 1_000, "0")]
    text = render(invoice(items, client_name="Łukasz Żółć"), org_name="Nettoyage Québec Zoë Côté")
    assert "Łukasz Żółć" in text
    assert "Nettoyage Québec Zoë Côté" in text
    assert "Ménage à fond, Œuvre Żółć" in text


def test_draft_is_refused():
    with pytest.raises(FailedPrecondition) as refused:
        render_invoice_pdf(invoice(status=InvoiceStatus.DRAFT, number=None), org_name="Sparkle")
    assert refused.value.code == "invoice_not_issued"
    assert "DRAFT" in refused.value.detail


def test_void_is_rendered_and_marked_and_owes_nothing():
    text = render(invoice(status=InvoiceStatus.VOID))
    assert "VOID - this invoice has been cancelled." in text
    assert "Balance due CAD 0.00" in text
    assert "Total CAD 144.95" in text  # the snapshot is still shown
    assert "VOID" not in render(invoice())


def test_an_invoice_voided_as_a_draft_has_no_number_yet_renders():
    text = render(invoice(status=InvoiceStatus.VOID, number=None, issued_at=None))
    assert "Invoice (not numbered)" in text
    assert "Issue date not issued" in text


def test_characters_the_font_lacks_never_raise():
    # CJK (not in DejaVu Sans nor latin-1), an unassigned code point, a lone surrogate, private use.
    description = "Start 北京 \U0010fffe \ud800 \ue000 end"
    text = render(invoice([line_item(description, "1", 100, "0")], client_name="北京 Client"))
    assert "Start ?? ? ? ? end" in text
    assert "?? Client" in text


def test_controls_and_bidi_overrides_are_dropped_and_markup_is_plain_text():
    description = "Pay \u202eCAD 999\u202c {nb} **not bold** <b>tag</b> (x) \\ \x00\x1b done"
    text = render(invoice([line_item(description, "1", 100, "0")]))
    assert "Pay CAD 999 {nb} **not bold** <b>tag</b> (x) \\ done" in flat(text)
    assert "\u202e" not in text


def test_without_a_unicode_font_the_pdf_still_renders_in_latin1(monkeypatch, tmp_path):
    monkeypatch.delenv(invoice_pdf.FONT_ENV, raising=False)
    monkeypatch.setattr(invoice_pdf, "DEFAULT_FONT", tmp_path / "missing.ttf")
    items = [line_item("Nettoyage ő ﬁn Łódź", "1", 100, "0")]
    text = render(invoice(items, client_name="Zoë Côté / Łukasz"))
    assert "Zoë Côté / ?ukasz" in text  # Ł has no latin-1 form
    assert "Nettoyage o fin ?ódz" in text  # ő -> o, ﬁ -> fi, ź -> z by decomposition


def test_an_unreadable_font_file_falls_back_instead_of_failing(monkeypatch, tmp_path):
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"not a font")
    monkeypatch.setenv(invoice_pdf.FONT_ENV, str(broken))
    monkeypatch.setattr(invoice_pdf, "DEFAULT_FONT", tmp_path / "missing.ttf")
    assert "Zoë Côté" in render(invoice())


@pytest.mark.skipif(not (DEJAVU / "DejaVuSerif.ttf").is_file(), reason="DejaVu Serif not installed")
def test_the_font_setting_chooses_the_embedded_font(monkeypatch):
    monkeypatch.setenv(invoice_pdf.FONT_ENV, str(DEJAVU / "DejaVuSerif.ttf"))
    assert invoice_pdf.font_files() == (DEJAVU / "DejaVuSerif.ttf", DEJAVU / "DejaVuSerif-Bold.ttf")
    reader = pypdf.PdfReader(io.BytesIO(render_invoice_pdf(invoice(), org_name="Sparkle")))
    fonts = reader.pages[0]["/Resources"]["/Font"]
    names = {str(font.get_object()["/BaseFont"]) for font in fonts.values()}
    assert any("DejaVuSerif" in name for name in names), names
    assert "Łukasz" in "\n".join(pages(render_invoice_pdf(invoice(client_name="Łukasz"), org_name="S")))


def test_the_same_invoice_renders_the_same_bytes():
    inv = invoice()
    assert render_invoice_pdf(inv, org_name="Sparkle") == render_invoice_pdf(inv, org_name="Sparkle")


def test_negative_payment_figures_are_refused():
    with pytest.raises(InvalidArgument):
        render_invoice_pdf(invoice(), org_name="Sparkle", paid_cents=-1)
    with pytest.raises(InvalidArgument):
        render_invoice_pdf(invoice(), org_name="Sparkle", outstanding_cents=-1)


def test_latin1_fallback_set_has_no_control_characters():
    assert ord("é") in LATIN1
    assert 0x1B not in LATIN1
    assert 0x85 not in LATIN1


@pytest.mark.parametrize(
    ("value", "text"), [("1.50", "1.5"), ("13.0000", "13"), ("100", "100"), ("9.975", "9.975"), ("0", "0")]
)
def test_quantities_and_rates_print_without_trailing_zeros(value, text):
    assert (
        invoice_pdf.format_decimal(Decimal(value).normalize() if value == "100" else Decimal(value)) == text
    )
