"""The notify tables the code declares (models.py) are the tables the migrations make: a column,
index or table added to one and not the other fails here, not in production."""

from __future__ import annotations

from typing import Any

from services.notify.models import SCHEMA, metadata
from tools.testkit import schema_drift


def test_models_and_migrations_agree(stack: Any) -> None:
    assert schema_drift(stack.admin_url, SCHEMA, metadata) == []
