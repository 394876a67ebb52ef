from libs.common.alembic_env import run_migrations
from services.notify.models import metadata

run_migrations(metadata)
