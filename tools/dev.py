"""`make dev`: the whole suite on one machine, no Docker.

Uses DATABASE_URL / NATS_URL / REDIS_URL where given; otherwise starts Postgres and nats-server from
their wheels under .run/ (kept between runs, so a second `make dev` finds its data). Migrates, seeds
a demo org with an owner, starts every process, prints how to log in, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from libs.common.internal_keys import CALLEES, Keyring
from libs.common.migrate import migrate
from libs.common.settings import DEV_ENV_FILE, where
from tools.devstack import (
    RUN_DIR,
    EmbeddedPostgres,
    NatsServer,
    ensure_database,
    port_open,
    provision_streams,
    with_user,
)
from tools.processes import DEV_SECRETS, NATS_USER_PASSWORDS, Proc, gateway_proc, service_proc, web_proc
from tools.smtp_sink import SmtpSink
from tools.stripe_local import LocalStripe

SERVICES = ("iam", "booking", "billing", "media", "notify", "jobs", "integrations")
# Default ports (ARCHITECTURE's numbering).
DEFAULT_PORTS = {
    "iam": (50051, 8101),
    "booking": (50052, 8102),
    "billing": (50053, 8103),
    "media": (50054, 8104),
    "notify": (50055, 8105),
    "jobs": (50056, 8106),
    "integrations": (50057, 8107),
}
DEFAULT_OWNER_EMAIL = "owner@example.com"
DEFAULT_OWNER_PASSWORD = "Demo-owner-password-1"
DEFAULT_BASIC_PASSWORD = "Demo-admin-basic-password-1"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, "") or default


async def _seed_demo_org(app_url: str, email: str, password: str) -> str:
    from libs.common.db import Database
    from libs.common.errors import Conflict
    from services.iam.manage import create_org_with_owner
    from services.iam.models import SCHEMA, event_tables

    db = Database(app_url, schema=SCHEMA, tables=event_tables, pool_size=1)
    try:
        created = await create_org_with_owner(db, name="Demo Cleaning Co", email=email, password=password)
        return str(created.org_id)
    except Conflict:
        return ""
    finally:
        await db.dispose()


def _existing_org(admin_url: str, email: str) -> str:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT org_id FROM iam.users WHERE lower(email) = lower(%s)", (email,)).fetchone()
    return str(row[0]) if row else ""


def _keyring() -> Keyring:
    """Internal call keys for this run: fresh ones, unless <PROCESS>_INTERNAL_SIGNING_KEY gives a
    process's own. Each process's env goes to .run/keys/<process>.env (owner-only), so a command run
    beside `make dev` (python -m services.jobs.run ...) can sign as that process."""
    keyring = Keyring.generate({name: _env(f"{name.upper()}_INTERNAL_SIGNING_KEY") for name in CALLEES})
    keys_dir = RUN_DIR / "keys"
    keys_dir.mkdir(mode=0o700, exist_ok=True)
    for process in ("gateway", *SERVICES):
        path = keys_dir / f"{process}.env"
        path.touch(mode=0o600, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in keyring.env_for(process).items()))
    return keyring


def _dev_photo_secret() -> str:
    """One per .run/ folder, so photo links made before a restart still open after it."""
    path = RUN_DIR / "photo_token_secret"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _dev_integrations_key() -> str:
    """INTEGRATIONS_TOKEN_KEY, one per .run/ folder: the OAuth tokens sealed in a run still open after
    a restart (base64 of 32 random bytes, as the setting wants)."""
    path = RUN_DIR / "integrations_token_key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    return path.read_text().strip()


# The OAuth providers of the integrations service (docs/integrations.md): (name shown, env prefix).
OAUTH_PROVIDERS = (("Google Calendar", "GOOGLE_OAUTH"), ("QuickBooks Online", "QUICKBOOKS_OAUTH"))


def _integrations_env(web_url: str) -> tuple[dict[str, str], list[str]]:
    """The integrations' settings for this run, and one line per provider for the banner. A provider is
    configured only when its client id and secret are given; its redirect URI defaults to this run's
    console page (register that exact URI with the provider)."""
    env = {"INTEGRATIONS_TOKEN_KEY": _env("INTEGRATIONS_TOKEN_KEY") or _dev_integrations_key()}
    lines = []
    for name, prefix in OAUTH_PROVIDERS:
        client_id, secret = _env(f"{prefix}_CLIENT_ID"), _env(f"{prefix}_CLIENT_SECRET")
        if client_id and secret:
            redirect = _env(f"{prefix}_REDIRECT_URI", web_url + "/admin/settings/integrations")
            env.update(
                {
                    f"{prefix}_CLIENT_ID": client_id,
                    f"{prefix}_CLIENT_SECRET": secret,
                    f"{prefix}_REDIRECT_URI": redirect,
                }
            )
            lines.append(f"{name}: configured (redirect URI {redirect})")
        else:
            lines.append(f"{name}: off ({prefix}_CLIENT_ID and {prefix}_CLIENT_SECRET turn it on)")
    return env, lines


class StartupError(Exception):
    """A start-up mistake said as one sentence: `make dev` prints it and exits 1, without a traceback."""


def _check_owner(email: str, password: str) -> None:
    """The demo owner's address and password, judged as create-org will judge them, before anything
    starts (a reserved domain such as .test is refused: it can never receive the sign-in emails)."""
    from libs.common.errors import ServiceError
    from services.iam.accounts import normalise_email
    from services.iam.passwords import check_policy

    try:
        normalise_email(email, "DEV_OWNER_EMAIL")
    except ServiceError as error:
        raise StartupError(
            f"{error.detail.rstrip('.')} (give an address such as owner@example.com)"
        ) from None
    try:
        check_policy(password, "DEV_OWNER_PASSWORD")
    except ServiceError as error:
        raise StartupError(error.detail) from None


def _port(name: str, default: int) -> int:
    raw = _env(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StartupError(f"{name}={raw!r} is not a port number (1 to 65535)")
    return int(raw)


def _check_ports_free(ports: dict[str, int]) -> None:
    busy = [f"{port} ({name})" for name, port in ports.items() if port_open("127.0.0.1", port)]
    if busy:
        raise StartupError(
            f"port {', '.join(busy)} is already in use (another make dev?): stop what listens there, "
            "or give that setting a free port"
        )


def _write_dev_env(env: dict[str, str], migrations_url: str, path: Path = DEV_ENV_FILE) -> str:
    """.run/dev.env, owner-only: what every process of this run shares (no process's own key or NATS
    password: those are in .run/keys/<process>.env), for a command in a second shell
    (libs/common/settings.py use_dev_env reads it there when APP_ENV is unset or dev)."""
    shared = {k: v for k, v in env.items() if v and not NATS_USER_PASSWORDS.fullmatch(k)}
    text = (
        f"# Written by make dev (pid {os.getpid()}) for commands in a second shell, removed when it stops.\n"
        # Shell-quoted where needed, so a shell can source it too (set -a; . .run/dev.env).
        + "".join(
            f"{k}={shlex.quote(v)}\n"
            for k, v in {**shared, "MIGRATIONS_DATABASE_URL": migrations_url}.items()
        )
    )
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)
    return text


def _remove_dev_env(written: str) -> None:
    # Only ours: another make dev of this checkout may have written its own since.
    if written and DEV_ENV_FILE.exists() and DEV_ENV_FILE.read_text() == written:
        DEV_ENV_FILE.unlink()


def main() -> int:
    try:
        return _run()
    except StartupError as error:
        print(f"make dev: {error}", file=sys.stderr)
    except psycopg.Error as error:
        # The first connection is the migration's: MIGRATIONS_DATABASE_URL, else DATABASE_URL.
        url = _env("MIGRATIONS_DATABASE_URL", _env("DATABASE_URL"))
        reason = " ".join(str(error).split())  # libpq's message spans lines
        print(f"make dev: cannot use Postgres at {where(url)}: {reason}", file=sys.stderr)
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or b"").decode(errors="replace").strip()
        print(f"make dev: {Path(str(error.cmd[0])).name} failed: {detail}", file=sys.stderr)
    except RuntimeError as error:  # tools.devstack / tools.processes: a server that did not come up
        print(f"make dev: {error}", file=sys.stderr)
    return 1


def _run() -> int:
    # Every mistake that can be seen before starting anything is refused here, so nothing is left running.
    owner_email = _env("DEV_OWNER_EMAIL", DEFAULT_OWNER_EMAIL)
    owner_password = _env("DEV_OWNER_PASSWORD", DEFAULT_OWNER_PASSWORD)
    _check_owner(owner_email, owner_password)
    ports = {"GATEWAY_PORT": _port("GATEWAY_PORT", 8000), "WEB_PORT": _port("WEB_PORT", 8080)}
    for name in SERVICES:
        grpc, http = DEFAULT_PORTS[name]
        ports[f"{name.upper()}_GRPC_PORT"] = _port(f"{name.upper()}_GRPC_PORT", grpc)
        ports[f"{name.upper()}_HTTP_PORT"] = _port(f"{name.upper()}_HTTP_PORT", http)
    _check_ports_free(ports)

    RUN_DIR.mkdir(exist_ok=True)
    started: list[EmbeddedPostgres | NatsServer] = []
    processes: list[Proc] = []
    mail: SmtpSink | None = None
    local_stripe: LocalStripe | None = None
    dev_env = ""
    try:
        database_url = _env("DATABASE_URL")
        if database_url:
            app_url = database_url
            migrations_url = _env("MIGRATIONS_DATABASE_URL", database_url)
        else:
            pg = EmbeddedPostgres(RUN_DIR / "pg" / "data").start()
            started.append(pg)
            migrations_url = ensure_database(pg.admin_url, "cws")
            app_url = with_user(migrations_url, "cws_app")
            print(f"postgres: embedded, {pg.admin_url.rsplit('/', 1)[0]}/cws (data in .run/pg)")

        # Before anything else starts: migrate() refuses the runtime role (DATABASE_URL alone naming
        # cws_app needs MIGRATIONS_DATABASE_URL too).
        migrate(migrations_url, "cws_app", os.environ.get("DATABASE_APP_PASSWORD"))

        # Each process connects as its own user of deploy/nats/nats.conf. Given NATS_URL, the server is
        # yours: give its users' passwords as NATS_<USER>_PASSWORD (NATS_ADMIN_PASSWORD makes the streams).
        nats_url = _env("NATS_URL")
        nats_passwords = {k: v for k, v in os.environ.items() if NATS_USER_PASSWORDS.fullmatch(k) and v}
        if not nats_url:
            # Our own, never a nats-server already on 4222 (one without our users would let anyone on the
            # machine publish our events). Its passwords are made up for this run.
            port_file = RUN_DIR / "nats.port"
            port = int(port_file.read_text()) if port_file.exists() else 0
            nats = NatsServer(RUN_DIR / "nats" / "js", port=port).start()
            port_file.write_text(str(nats.port))
            started.append(nats)
            nats_url = nats.url
            nats_passwords = nats.password_env()
            print(
                f"nats: embedded, {nats_url} (JetStream store in .run/nats, users of deploy/nats/nats.conf)"
            )
        if nats_passwords.get("NATS_ADMIN_PASSWORD"):
            provision_streams(nats_url, nats_passwords["NATS_ADMIN_PASSWORD"])

        org_id = asyncio.run(_seed_demo_org(app_url, owner_email, owner_password)) or _existing_org(
            migrations_url, owner_email
        )

        env = {
            **{k: _env(k, v) for k, v in DEV_SECRETS.items()},
            "APP_ENV": _env("APP_ENV", "dev"),
            "DATABASE_URL": app_url,
            "NATS_URL": nats_url,
            **nats_passwords,  # service_proc and gateway_proc give each process its own
            "REDIS_URL": _env("REDIS_URL"),
            "DEFAULT_ORG_ID": _env("DEFAULT_ORG_ID", org_id),
            "ADMIN_BASIC_USERNAME": _env("ADMIN_BASIC_USERNAME", "admin"),
            "ADMIN_BASIC_PASSWORD": _env("ADMIN_BASIC_PASSWORD", DEFAULT_BASIC_PASSWORD),
            "OWNER_BASIC_USERNAME": _env("OWNER_BASIC_USERNAME", "owner"),
            "OWNER_BASIC_PASSWORD": _env("OWNER_BASIC_PASSWORD", DEFAULT_BASIC_PASSWORD),
            # Seed 004 reads the photo queue as a dispatcher.
            "DISPATCHER_BASIC_USERNAME": _env("DISPATCHER_BASIC_USERNAME", "dispatcher"),
            "DISPATCHER_BASIC_PASSWORD": _env("DISPATCHER_BASIC_PASSWORD", DEFAULT_BASIC_PASSWORD),
        }
        if not _env("EMAIL_MODE"):
            # No mail provider configured: catch every email in .run/mail/ (one .eml each), so magic links,
            # confirmations and reminders can be read without an inbox.
            mail = SmtpSink(save_dir=RUN_DIR / "mail").start()
            env.update({"EMAIL_MODE": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail.port)})
        # No Stripe account given: the local Stripe (localstripe behind our Checkout front) stands in, and
        # delivers its signed webhooks to this gateway, so an invoice can be paid end to end offline.
        if not _env("STRIPE_SECRET_KEY"):
            local_stripe = LocalStripe(RUN_DIR / "logs").start()
            env.update(
                {
                    "STRIPE_SECRET_KEY": "sk_test_local_dev",
                    "STRIPE_WEBHOOK_SECRET": "whsec_local_dev_" + secrets.token_hex(16),
                    "STRIPE_API_BASE": local_stripe.api_base,
                }
            )
        else:
            env.update(
                {k: _env(k) for k in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE")}
            )
        # Every process learns every service's address (notify asks iam and booking; jobs asks them all).
        env.update(
            {
                f"{name.upper()}_GRPC_TARGET": f"127.0.0.1:{ports[name.upper() + '_GRPC_PORT']}"
                for name in SERVICES
            }
        )
        env["JOBS_ENABLED"] = _env("JOBS_ENABLED", "false")
        # Photos on this machine unless another backend is given: files under .run/uploads (kept between
        # runs, like the database), links signed with a secret made for this .run/ folder.
        env["ORDER_STORAGE_BACKEND"] = _env("ORDER_STORAGE_BACKEND", "local")
        env["ORDER_UPLOAD_ROOT"] = _env("ORDER_UPLOAD_ROOT", str(RUN_DIR / "uploads"))
        env["PHOTO_TOKEN_SECRET"] = _env("PHOTO_TOKEN_SECRET") or _dev_photo_secret()
        # Emailed client sign-in links open the web console's portal pages (docs/web.md).
        web_url = f"http://127.0.0.1:{ports['WEB_PORT']}"
        env["CLIENT_PORTAL_BASE_URL"] = _env("CLIENT_PORTAL_BASE_URL", web_url + "/portal")
        # Google Calendar and QuickBooks Online: off unless their OAuth clients are given; the tokens of a
        # connected org are sealed with a key kept in .run/ (docs/integrations.md).
        integrations_env, integrations_lines = _integrations_env(web_url)
        env.update(integrations_env)
        log_dir = RUN_DIR / "logs"
        keyring = _keyring()
        services = [
            service_proc(
                name,
                env,
                log_dir,
                grpc_port=ports[f"{name.upper()}_GRPC_PORT"],
                http_port=ports[f"{name.upper()}_HTTP_PORT"],
                keyring=keyring,
            )
            for name in SERVICES
        ]
        gateway = gateway_proc(env, log_dir, port=ports["GATEWAY_PORT"], keyring=keyring)
        # No proxy in front on a workstation: the browser fetches signed photo links from the gateway.
        web_env = {**env, "WEB_GATEWAY_PUBLIC_URL": _env("WEB_GATEWAY_PUBLIC_URL", gateway.url)}
        web = web_proc(web_env, log_dir, gateway.url, port=ports["WEB_PORT"])
        processes = [*services, gateway, web]

        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        for service in services:
            service.start()
        for service in services:
            service.wait_ready()
        gateway.start().wait_ready()
        web.start().wait_ready()
        if local_stripe is not None:
            local_stripe.configure_webhook(f"{gateway.url}/v1/webhooks/stripe", env["STRIPE_WEBHOOK_SECRET"])
        # API_BASE too: `set -a; . .run/dev.env; set +a` gives seed 004's curl lines what they name.
        dev_env = _write_dev_env({**env, "API_BASE": gateway.url}, migrations_url)
        print(
            f"""
CleanWithSnapshot suite is running (logs in .run/logs/).
  console:  {web.url}/console   (sign in as {owner_email} / {owner_password}; docs/web.md)
  gateway:  {gateway.url}   (OpenAPI: {gateway.url}/docs)
  demo org: {org_id}
  log in:   curl -s -X POST {gateway.url}/v1/auth/login -H 'Content-Type: application/json' \\
              -d '{{"email":"{owner_email}","password":"{owner_password}"}}'
  basic:    curl -i -u 'admin:{env["ADMIN_BASIC_PASSWORD"]}' {gateway.url}/v1/admin/profile
  mail:     {"captured in .run/mail/ (one .eml per message)" if mail else "EMAIL_MODE=" + env["EMAIL_MODE"]}
  photos:   {"ORDER_STORAGE_BACKEND=" + env["ORDER_STORAGE_BACKEND"] + (" under " + env["ORDER_UPLOAD_ROOT"] if env["ORDER_STORAGE_BACKEND"] == "local" else "")}
  stripe:   {"local: " + local_stripe.api_base + " (webhooks to the gateway; docs/billing.md walks a payment)" if local_stripe else "STRIPE_SECRET_KEY given: Stripe itself"}
  jobs:     scheduler {"on" if env["JOBS_ENABLED"].lower() == "true" else "off (JOBS_ENABLED=true turns it on)"}
  integrations: {"; ".join(integrations_lines)}
  shell 2:  python -m services.jobs.run ..., python -m services.iam.manage ... and make migrate in another
            shell read this run's settings (.run/dev.env) and call keys (.run/keys/<process>.env);
            `set -a; . .run/dev.env; set +a` sets $API_BASE and the Basic Auth pairs for seed 004's curl
            lines, and deploy/scripts/smoke.sh then runs its GO/NO-GO checks
Press Ctrl-C to stop.""",
            flush=True,
        )
        while not stopping:
            for proc in processes:
                if not proc.alive:
                    print(f"{proc.name} exited; last log lines:\n{proc.tail()}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        if processes or started or mail is not None or local_stripe is not None:
            print("stopping...", flush=True)
        _remove_dev_env(dev_env)
        for proc in reversed(processes):
            proc.stop()
        for server in reversed(started):
            server.stop()
        if mail is not None:
            mail.stop()
        if local_stripe is not None:
            local_stripe.stop()


if __name__ == "__main__":
    sys.exit(main())
