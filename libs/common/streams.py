"""`python -m libs.common.streams`: create or update every service's JetStream stream, as the NATS
admin user. Run before the services start, and again on every upgrade (compose's `streams` container,
the `cws-streams` Kubernetes Job, `make dev` and the test fixtures do).

The services cannot do it themselves, on purpose: a user allowed to configure a stream can make it
republish its messages onto another service's subjects (`republish`) or copy another service's stream
into its own (`sources`), which would undo the per-service permissions of deploy/nats/nats.conf.
So the services only publish to their stream, and only the admin, here, shapes it.

Services are found on disk (services/<name>/events.py), so libs.common imports no service.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common.bus import EventBus, stream_name
from libs.common.logs import configure_logging, get_logger
from libs.common.settings import PLACEHOLDER_SECRETS

ROOT = Path(__file__).resolve().parents[2]
ADMIN_USER = "admin"

log = get_logger(__name__)


class StreamSettings(BaseSettings):
    """Only what this one-shot needs: where NATS is and the admin's credentials (no other secret)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    app_env: str = ""
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str = ADMIN_USER
    nats_password: str = Field(default="", repr=False)
    # How long to wait for NATS (and JetStream) to answer before giving up.
    nats_wait_seconds: float = 60.0

    def problems(self) -> list[str]:
        if self.app_env.lower() in {"prod", "production"} and (
            self.nats_password.strip().lower() in PLACEHOLDER_SECRETS or len(self.nats_password) < 32
        ):
            return ["NATS_PASSWORD (of the NATS admin) is a placeholder or shorter than 32 characters"]
        return []


def stream_services(root: Path = ROOT) -> list[str]:
    """Every service that declares its events has a stream, whether or not it publishes yet."""
    return sorted(path.parent.name for path in (root / "services").glob("*/events.py"))


async def provision(
    url: str, user: str, password: str, services: list[str], *, wait_seconds: float = 60.0
) -> list[str]:
    """Create or update each service's stream; the names of the streams. Retries until NATS and
    JetStream answer or `wait_seconds` pass."""
    bus = EventBus(url, "cws-streams", user=user, password=password)
    connecting = asyncio.create_task(bus.connect())
    deadline = time.monotonic() + wait_seconds
    try:
        await asyncio.wait_for(asyncio.shield(connecting), wait_seconds)
        for service in services:
            while True:
                try:
                    await bus.ensure_stream(service)
                    break
                except Exception as exc:  # JetStream still starting: the port opens before it answers
                    if time.monotonic() > deadline:
                        raise
                    log.warning("ensure_stream_failed", stream=stream_name(service), error=str(exc))
                    await asyncio.sleep(1)
        return [stream_name(service) for service in services]
    finally:
        connecting.cancel()
        await bus.close()


def main() -> int:
    settings = StreamSettings()
    configure_logging("streams", "INFO")
    if problems := settings.problems():
        print("refusing to start in APP_ENV=prod: " + "; ".join(problems), file=sys.stderr)
        return 1
    try:
        done = asyncio.run(
            provision(
                settings.nats_url,
                settings.nats_user,
                settings.nats_password,
                stream_services(),
                wait_seconds=settings.nats_wait_seconds,
            )
        )
    except TimeoutError:
        print(
            f"NATS at {settings.nats_url} did not accept user {settings.nats_user!r} within "
            f"{settings.nats_wait_seconds:g} s (is NATS_PASSWORD the admin's?)",
            file=sys.stderr,
        )
        return 1
    print(f"streams: {', '.join(done)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
