"""The body of every service's Alembic env.py: each service migrates only its own schema, keeps its
version table inside that schema, and autogenerate never looks at another service's tables."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import MetaData, create_engine, pool, text

from libs.common.settings import sqlalchemy_url


def run_migrations(metadata: MetaData) -> None:
    schema = metadata.schema
    assert schema, "a service's MetaData must name its schema"
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is set by libs.common.migrate"

    def include_name(name: str | None, type_: Any, parent_names: Any) -> bool:
        if type_ == "schema":
            return name == schema
        return True

    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=include_name,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
