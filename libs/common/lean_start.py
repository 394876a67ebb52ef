"""Imported first by a service's entry point (services/*/__main__.py), before any dependency: optional
extras of our dependencies that a service process never uses are marked absent, so the packages that
look for them (installed here for the tests and tools) skip them.

- rich, pygments: structlog's console renderer and pretty tracebacks (we log JSON: libs/common/logs.py)
  and mako's highlighted template errors (alembic's; a service only reads its migrations' head).
- aiohttp: nats-py's WebSocket transport (NATS_URL is nats://, never ws://).

Together about 0.4 to 0.7 s of CPU of every service start (of 2.2 to 2.8 s): every test that starts a
process pays it. A module that does need one of them fails at once with an ImportError naming it.
Never imported by the test process or the tools, where pytest's plugins use rich."""

from __future__ import annotations

import sys

for _name in ("rich", "pygments", "aiohttp"):
    sys.modules.setdefault(_name, None)  # type: ignore[arg-type]
