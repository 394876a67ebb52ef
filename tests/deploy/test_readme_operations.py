"""The README's Operations blocks (```sh: they need Docker, which this machine does not run) name
scripts that exist and compose services that exist, with the commands the scripts themselves say
they take; the scripts are run against stand-ins in the other tests here, and the README's ```bash
blocks run as written against `make dev` (tests/test_dev_command.py)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def operations_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Operations\n") : readme.index("## Layout\n")]
    return re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def commands() -> list[str]:
    lines = [line.split("#", 1)[0].strip() for block in operations_blocks() for line in block.splitlines()]
    return [line for line in lines if line]


def test_the_operations_section_walks_through_deploy_smoke_backup_restore_and_rollback() -> None:
    text = "\n".join(commands())
    for step in ("deploy/scripts/deploy.sh", "deploy/scripts/smoke.sh", "run --rm backup", "restore"):
        assert step in text, step


def test_every_script_and_compose_service_it_names_exists() -> None:
    services = set(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])
    readme = (ROOT / "README.md").read_text()
    named_scripts = set(re.findall(r"deploy/scripts/[\w.]+", "\n".join(commands()) + readme))
    assert named_scripts, "no script named"
    for script in named_scripts:
        path = ROOT / script
        assert path.is_file(), script
        if path.suffix == ".sh":
            assert path.stat().st_mode & 0o111, f"{script} is not executable"
    checked = set()
    for command in commands():
        for service in re.findall(
            r"docker compose (?:run --rm(?: -T| --no-deps| -e \S+)*|stop) ([\w -]+)", command
        ):
            for name in service.split():
                if name.startswith("deploy/") or name.startswith("python"):
                    break
                assert name in services, (name, command)
                checked.add(name)
    assert {"backup", "restore", "migrate", "gateway", "media"} <= checked, checked
