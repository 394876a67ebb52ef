"""Prints the code's Alembic head of every service as `schema=revision ...` on one line, the form
restore_pg.sh reads from ALEMBIC_HEADS (each service keeps its version table in its own schema,
named after the service).

Run it with the suite's Python, from a checkout or the image:
    .venv/bin/python deploy/scripts/alembic_heads.py
    docker compose run --rm --no-deps -T migrate python - < deploy/scripts/alembic_heads.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory


def service_heads(root: Path) -> dict[str, str]:
    """Each services/<name>/migrations history's single head (several heads are joined by '+',
    which never matches a restored version and so shows up as a mismatch)."""
    heads = {}
    for migrations in sorted(root.glob("services/*/migrations")):
        if not (migrations / "env.py").exists():
            continue
        config = Config()
        config.set_main_option("script_location", str(migrations))
        heads[migrations.parent.name] = "+".join(sorted(ScriptDirectory.from_config(config).get_heads()))
    return heads


def main() -> int:
    # From a checkout (deploy/scripts/ two levels down) or, read from stdin, the image's /app.
    script = Path(globals().get("__file__", "-"))
    root = script.resolve().parents[2] if script.suffix == ".py" and script.exists() else Path.cwd()
    heads = service_heads(root)
    if not heads:
        print(f"alembic_heads: no services/*/migrations under {root}", file=sys.stderr)
        return 1
    print(" ".join(f"{name}={head}" for name, head in heads.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
