from libs.common.alembic_env import run_migrations
from services.integrations.models import metadata

run_migrations(metadata)
