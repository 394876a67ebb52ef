"""Validation and normalisation of what people type: names, phones, emails, postal codes."""

from __future__ import annotations

import re

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from libs.common.errors import FieldViolation

_CA_POSTAL = re.compile(r"^([ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z])\s?(\d[ABCEGHJ-NPRSTV-Z]\d)$")
_US_ZIP = re.compile(r"^(\d{5})(?:-?(\d{4}))?$")


def email(value: str, field: str, problems: list[FieldViolation], required: bool = True) -> str:
    value = value.strip()
    if not value:
        if required:
            problems.append(FieldViolation(field, "is required"))
        return ""
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        problems.append(FieldViolation(field, str(exc)))
        return value


def phone(value: str, field: str, problems: list[FieldViolation], region: str, required: bool = True) -> str:
    """E.164, e.g. 780-555-0000 → +17805550000."""
    value = value.strip()
    if not value:
        if required:
            problems.append(FieldViolation(field, "is required"))
        return ""
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_possible_number(parsed):
        problems.append(FieldViolation(field, "is not a phone number"))
        return value
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def postal_code(
    value: str, field: str, problems: list[FieldViolation], country: str, required: bool = True
) -> str:
    raw = value.strip().upper()
    if not raw:
        if required:
            problems.append(FieldViolation(field, "is required"))
        return ""
    if country == "CA":
        match = _CA_POSTAL.match(raw)
        if match:
            return f"{match.group(1)} {match.group(2)}"
        problems.append(FieldViolation(field, "is not a Canadian postal code (e.g. T5J 0N3)"))
        return raw
    if country == "US":
        match = _US_ZIP.match(raw)
        if match:
            return match.group(1) + (f"-{match.group(2)}" if match.group(2) else "")
        problems.append(FieldViolation(field, "is not a ZIP code"))
        return raw
    if not re.fullmatch(r"[A-Z0-9 -]{3,10}", raw):
        problems.append(FieldViolation(field, "is not a postal code"))
    return raw


def text(
    value: str, field: str, problems: list[FieldViolation], *, max_length: int, required: bool = False
) -> str:
    value = value.strip()
    if required and not value:
        problems.append(FieldViolation(field, "is required"))
    if len(value) > max_length:
        problems.append(FieldViolation(field, f"must be at most {max_length} characters"))
    return value
