"""Operator commands: `python -m services.iam.manage create-org --name ... --owner-email ...`.

The owner password is read from --owner-password or, better, the OWNER_PASSWORD environment
variable, so it stays out of shell history. Runs with the service's own DATABASE_URL."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from libs.common.db import Database
from libs.common.errors import ServiceError
from services.iam.accounts import create_org_with_owner
from services.iam.models import SCHEMA, event_tables
from services.iam.settings import IamSettings


async def _create_org(args: argparse.Namespace) -> int:
    settings = IamSettings()
    db = Database(settings.database_url, schema=SCHEMA, tables=event_tables)
    password = args.owner_password or os.environ.get("OWNER_PASSWORD", "")
    try:
        created = await create_org_with_owner(
            db, name=args.name, email=args.owner_email, password=password, time_zone=args.time_zone
        )
    except ServiceError as error:
        print(f"error: {error.detail}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()
    print(f"org_id={created.org_id} owner_id={created.owner_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.iam.manage")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-org", help="create an org and its owner")
    create.add_argument("--name", required=True)
    create.add_argument("--owner-email", required=True)
    create.add_argument("--owner-password", default="")
    create.add_argument("--time-zone", default="UTC")
    args = parser.parse_args(argv)
    return asyncio.run(_create_org(args))


if __name__ == "__main__":
    sys.exit(main())
