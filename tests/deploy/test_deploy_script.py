"""Runs deploy/scripts/deploy.sh (seed 003's one-button deploy) in a real git checkout with a bare
"origin", against a stand-in `docker` first on PATH (this machine has no Docker engine: the stand-in
records its arguments and answers as docker would) and the suite's real gateway for the smoke step.

Checked: the order of the steps, both revisions printed, .env and ./backups surviving the reset,
refusal of local changes without --force, and a non-zero exit naming the step that failed."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tools.devstack import free_port

SCRIPTS = Path(__file__).resolve().parents[2] / "deploy" / "scripts"

# Answers like the docker CLI for what deploy.sh calls; FAKE_DOCKER_FAIL names a call that fails
# (matched against "compose <args>"), FAKE_PG_READY_AFTER how many pg_isready calls fail first
# (or "never").
FAKE_DOCKER = r"""#!/usr/bin/env bash
set -euo pipefail
printf '%s\n' "$*" >>"$FAKE_DOCKER_LOG"
args="$*"
if [[ -n "${FAKE_DOCKER_FAIL:-}" && "$args" == "$FAKE_DOCKER_FAIL"* ]]; then
  echo "Error response from daemon: fake failure of '$args'" >&2
  exit 1
fi
case "$args" in
  "compose version") echo "Docker Compose version v2.29.7" ;;
  "compose exec -T db pg_isready"*)
    n=$(grep -c pg_isready "$FAKE_DOCKER_LOG")
    [[ "${FAKE_PG_READY_AFTER:-0}" != never && $n -gt ${FAKE_PG_READY_AFTER:-0} ]] || exit 2 ;;
  "compose run --rm migrate") echo "migrated: iam, booking, billing, media, notify, jobs" >&2 ;;
esac
"""

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@dataclass
class Host:
    server: Path  # the production checkout deploy.sh runs in
    dev: Path  # a developer's clone that pushes new revisions
    bin_dir: Path
    log: Path

    def push_change(self, name: str, content: str) -> str:
        (self.dev / name).write_text(content)
        git(self.dev, "add", "-A")
        git(self.dev, "commit", "-qm", f"change {name}")
        git(self.dev, "push", "-q", "origin", "main")
        return git(self.dev, "rev-parse", "HEAD")

    def deploy(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("SMOKE_", "API_BASE", "DEPLOY_"))}
        clean = {k: v for k, v in clean.items() if not k.endswith(("_BASIC_USERNAME", "_BASIC_PASSWORD"))}
        return subprocess.run(
            [str(self.server / "deploy" / "scripts" / "deploy.sh"), *args],
            env={
                **clean,
                **GIT_ENV,
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}",
                "FAKE_DOCKER_LOG": str(self.log),
                **env,
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def docker_calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def host(tmp_path: Path) -> Host:
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    dev = tmp_path / "dev"
    git(tmp_path, "clone", "-q", str(origin), str(dev))
    git(dev, "checkout", "-q", "-b", "main")
    (dev / "deploy" / "scripts").mkdir(parents=True)
    for script in ("deploy.sh", "smoke.sh"):
        shutil.copy2(SCRIPTS / script, dev / "deploy" / "scripts" / script)
    (dev / "docker-compose.yml").write_text("name: cws\n")
    (dev / ".gitignore").write_text(".env\nbackups/\n")
    git(dev, "add", "-A")
    git(dev, "commit", "-qm", "v1")
    git(dev, "push", "-q", "origin", "main")

    server = tmp_path / "server"
    git(tmp_path, "clone", "-q", "-b", "main", str(origin), str(server))
    (server / ".env").write_text("APP_ENV=prod\nCWS_SITE_ADDRESS=:80\n")
    (server / "backups").mkdir()
    (server / "backups" / "pg_cws_20260101T000000Z.dump").write_bytes(b"PGDMP kept")

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    return Host(server=server, dev=dev, bin_dir=bin_dir, log=tmp_path / "docker.log")


def unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def test_deploy_updates_the_checkout_keeps_env_and_data_and_runs_every_step(
    host: Host, gateways: Any, make_org: Any
) -> None:
    before = git(host.server, "rev-parse", "HEAD")
    after = host.push_change("NEW_FEATURE", "v2\n")
    org = await make_org()
    gw = gateways.get(CAPTCHA_MODE="turnstile", TURNSTILE_SECRET_KEY="x" * 32, DEFAULT_ORG_ID=org.org_id)

    result = await asyncio.to_thread(host.deploy, SMOKE_BASE_URL=gw.url, FAKE_PG_READY_AFTER="1")

    assert result.returncode == 0, result.stdout + result.stderr
    assert host.docker_calls() == [
        "compose version",
        "compose build",
        "compose up -d --remove-orphans",
        "compose exec -T db pg_isready -q -h 127.0.0.1 -U postgres -d cws",  # not ready yet: waits
        "compose exec -T db pg_isready -q -h 127.0.0.1 -U postgres -d cws",
        "compose run --rm migrate",
    ]
    assert f"current: {before}" in result.stderr and f"new:     {after}" in result.stderr
    order = [result.stderr.index(f"step {n}/7") for n in range(1, 8)]
    assert order == sorted(order)
    assert git(host.server, "rev-parse", "HEAD") == after
    assert (host.server / "NEW_FEATURE").read_text() == "v2\n"
    assert (host.server / ".env").read_text() == "APP_ENV=prod\nCWS_SITE_ADDRESS=:80\n"
    assert (host.server / "backups" / "pg_cws_20260101T000000Z.dump").read_bytes() == b"PGDMP kept"
    assert result.stdout.splitlines()[-1] == "GO"
    assert "PASS  POST /v1/estimate" in result.stdout


@pytest.mark.parametrize(
    ("env", "step", "message", "calls"),
    [
        (
            {"FAKE_DOCKER_FAIL": "compose build"},
            "step 3/7 (docker compose build)",
            "docker compose build failed",
            2,
        ),
        (
            {"FAKE_DOCKER_FAIL": "compose up"},
            "step 4/7 (docker compose up -d --remove-orphans)",
            "docker compose up failed",
            3,
        ),
        (
            {"FAKE_PG_READY_AFTER": "never", "POSTGRES_WAIT_SECONDS": "1"},
            "step 5/7 (wait for Postgres (up to 1s))",
            "Postgres did not accept connections within 1s",
            None,
        ),
        (
            {"FAKE_DOCKER_FAIL": "compose run --rm migrate"},
            "step 6/7 (migrations (docker compose run --rm migrate))",
            "the migrations failed",
            None,
        ),
    ],
)
def test_a_failing_step_stops_the_deploy_and_is_named(
    host: Host, env: dict[str, str], step: str, message: str, calls: int | None
) -> None:
    host.push_change("NEW_FEATURE", "v2\n")

    result = host.deploy(SMOKE_BASE_URL=unreachable(), **env)

    assert result.returncode == 1, result.stderr
    assert f"deploy: FAILED at {step}: {message}" in result.stderr
    if calls is not None:
        assert len(host.docker_calls()) == calls, host.docker_calls()  # nothing ran after the failure
    assert "step 7/7" not in result.stderr


def test_smoke_no_go_fails_the_deploy(host: Host) -> None:
    result = host.deploy(SMOKE_BASE_URL=unreachable(), READY_WAIT_SECONDS="0", SMOKE_TIMEOUT="1")

    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "NO-GO"
    assert "FAILED at step 7/7 (smoke tests against http://127.0.0.1:" in result.stderr
    assert "smoke tests said NO-GO" in result.stderr


def test_local_changes_are_refused_unless_forced_and_then_saved(host: Host) -> None:
    after = host.push_change("NEW_FEATURE", "v2\n")
    compose = host.server / "docker-compose.yml"
    compose.write_text("name: cws\n# hot fix edited on the server\n")

    refused = host.deploy(SMOKE_BASE_URL=unreachable())
    assert refused.returncode == 1
    assert "FAILED at step 2/7" in refused.stderr and "rerun with --force" in refused.stderr
    assert "M docker-compose.yml" in refused.stderr
    assert "hot fix" in compose.read_text() and host.docker_calls() == ["compose version"]

    forced = host.deploy("--force", SMOKE_BASE_URL=unreachable(), FAKE_DOCKER_FAIL="compose build")
    assert "FAILED at step 3/7" in forced.stderr  # got past the update
    assert git(host.server, "rev-parse", "HEAD") == after
    patches = list((host.server / "backups").glob("deploy-discarded-*.patch"))
    assert len(patches) == 1 and "+# hot fix edited on the server" in patches[0].read_text()


def test_refuses_when_the_new_revision_tracks_a_kept_path_or_env_is_missing(host: Host) -> None:
    git(host.dev, "add", "-f", ".gitignore")  # keep the ignore list; track .env on purpose
    (host.dev / ".env").write_text("APP_ENV=dev\n")
    git(host.dev, "add", "-f", ".env")
    git(host.dev, "commit", "-qm", "oops, .env")
    git(host.dev, "push", "-q", "origin", "main")

    result = host.deploy(SMOKE_BASE_URL=unreachable())
    assert result.returncode == 1
    assert "origin/main tracks '.env': the reset would overwrite the local one" in result.stderr
    assert (host.server / ".env").read_text().startswith("APP_ENV=prod")

    (host.server / ".env").unlink()
    missing = host.deploy(SMOKE_BASE_URL=unreachable())
    assert missing.returncode == 1 and "no .env in" in missing.stderr


def test_code_rollback_deploys_a_given_revision(host: Host) -> None:
    before = git(host.server, "rev-parse", "HEAD")
    host.push_change("NEW_FEATURE", "v2\n")
    env = {"SMOKE_BASE_URL": unreachable(), "FAKE_DOCKER_FAIL": "compose build"}  # stop after the update
    assert "FAILED at step 3/7" in host.deploy(**env).stderr
    assert (host.server / "NEW_FEATURE").exists()

    rolled_back = host.deploy(before[:10], **env)

    assert f"step 2/7 (update the checkout to {before[:10]})" in rolled_back.stderr
    assert f"new:     {before}" in rolled_back.stderr and "FAILED at step 3/7" in rolled_back.stderr
    assert git(host.server, "rev-parse", "HEAD") == before and not (host.server / "NEW_FEATURE").exists()
    assert (host.server / ".env").exists()

    unknown = host.deploy("0" * 40, **env)
    assert unknown.returncode == 1 and f"'{'0' * 40}' is not a commit of this repository" in unknown.stderr
    usage = host.deploy("--frce")
    assert usage.returncode == 2 and "usage:" in usage.stderr
