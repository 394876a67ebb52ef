"""Readiness reads each service's migration head from the files (libs/common/readiness.py) instead of
importing Alembic at start-up: the answer must be Alembic's own, for every service, and a layout the
simple reading cannot settle (two heads) must still be Alembic's answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.common.readiness import _alembic_head_by_alembic, alembic_head

ROOT = Path(__file__).resolve().parents[3]
MIGRATIONS = sorted(path for path in ROOT.glob("services/*/migrations") if (path / "versions").is_dir())


@pytest.mark.parametrize("migrations", MIGRATIONS, ids=[path.parent.name for path in MIGRATIONS])
def test_the_head_read_from_the_files_is_alembic_s(migrations: Path) -> None:
    assert alembic_head(migrations) == _alembic_head_by_alembic(migrations) != ""


def test_a_chain_and_a_branch_point(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (tmp_path / "script.py.mako").write_text("")
    (tmp_path / "env.py").write_text("")
    chain = [("a1", None), ("b2", "a1"), ("c3", "b2")]
    for revision, down in chain:
        (versions / f"{revision}.py").write_text(f"revision = {revision!r}\ndown_revision = {down!r}\n")
    assert alembic_head(tmp_path) == "c3"
    # A merge revision names two parents: still one head.
    (versions / "d4.py").write_text("revision = 'd4'\ndown_revision = ('c3', 'x9')\n")
    (versions / "x9.py").write_text("revision = 'x9'\ndown_revision = 'b2'\n")
    assert alembic_head(tmp_path) == "d4"
