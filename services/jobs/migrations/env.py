from libs.common.alembic_env import run_migrations
from services.jobs.models import metadata

run_migrations(metadata)
