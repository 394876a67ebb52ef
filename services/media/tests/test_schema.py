"""The media tables the code declares (models.py) are the tables the migrations make: a column,
index or table added to one and not the other fails here, not in production."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from libs.common.settings import sqlalchemy_url
from services.media.models import SCHEMA, metadata


def test_models_and_migrations_agree(stack: Any) -> None:
    engine = sa.create_engine(sqlalchemy_url(stack.admin_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    # Alembic's own version table lives in the schema and in no model.
                    "include_name": lambda name, kind, _: (
                        (kind != "schema" or name == SCHEMA)
                        and not (kind == "table" and name == "alembic_version")
                    ),
                },
            )
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()
