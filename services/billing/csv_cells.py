"""CSV for spreadsheets: every report and export of billing writes its cells through `safe_cell`.

A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` as a formula, and some also after a
leading tab or carriage return: a client named `=HYPERLINK("https://evil.example","pay here")` would
become a live link in the accountant's sheet (CSV injection, OWASP). Such a text cell is written with a
leading apostrophe, which spreadsheets show as text and do not run. Numbers are ours (cents, counts)
and are written as they are: a negative amount stays a number."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

Cell = str | int | date | datetime | None


def safe_cell(value: Cell) -> str | int:
    if value is None:
        return ""
    if isinstance(value, bool):  # a bool is an int: say what it is rather than 1/0
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def csv_text(rows: Iterable[Sequence[Cell]]) -> str:
    """Rows as CSV text (RFC 4180 quoting, CRLF line ends), every cell through safe_cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
    return buffer.getvalue()
