"""deploy/nats/nats.conf, generated from what the code declares (the code is the permission list).

`python -m tools.nats_config` rewrites deploy/nats/nats.conf and the Kubernetes ConfigMap that carries
it (deploy/k8s/nats-config.yaml); `--check` fails when either differs (tests/test_nats_config.py runs
the same comparison). A new consumer, broadcast or published event thus gets its permission, and a
removed one loses it, the moment the config is regenerated.

Users: `admin` (everything: creates the streams, libs/common/streams.py, and is the operator's), one per
service and the gateway, each allowed only its own subjects, its own stream's info, and the consumers
it declares, and `events_reader` for consumers outside the suite (read-only). Every password comes from
an environment variable, NATS_<USER>_PASSWORD. There is no anonymous user."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from libs.common.bus import inbox_prefix, stream_name
from libs.common.streams import ADMIN_USER, stream_services
from tools import events_catalogue
from tools.devstack import nats_password_variable
from tools.events_catalogue import ServiceEvents, Subscriber

ROOT = Path(__file__).resolve().parents[1]
NATS_CONF = ROOT / "deploy" / "nats" / "nats.conf"
START_SCRIPT = ROOT / "deploy" / "nats" / "start.sh"
K8S_CONFIGMAP = ROOT / "deploy" / "k8s" / "nats-config.yaml"
READER_USER = "events_reader"


@dataclass(frozen=True)
class Grant:
    subject: str
    why: str


@dataclass
class NatsUser:
    name: str
    doc: str
    publish: list[Grant] = field(default_factory=list)
    deny: list[Grant] = field(default_factory=list)
    subscribe: list[Grant] = field(default_factory=list)
    unrestricted: bool = False

    @property
    def password_variable(self) -> str:
        return nats_password_variable(self.name)


def _stream_of(subscriber: Subscriber) -> str:
    return stream_name(subscriber.event.producer)


def _durables(catalogue: list[ServiceEvents]) -> list[Subscriber]:
    return [s for entry in catalogue for s in entry.subscribers if s.kind == "durable"]


def _unique(grants: Iterable[Grant]) -> list[Grant]:
    seen: dict[str, Grant] = {}
    for grant in grants:
        seen.setdefault(grant.subject, grant)
    return list(seen.values())


def service_user(entry: ServiceEvents, catalogue: list[ServiceEvents], streams: list[str]) -> NatsUser:
    """What one process of `entry.service` does on NATS, and nothing else."""
    name = entry.service
    publish: list[Grant] = []
    deny: list[Grant] = []
    if entry.published:
        publish.append(Grant(f"cws.{name}.>", "its own events (the outbox relay)"))
    if name in streams:
        publish.append(
            Grant(f"$JS.API.STREAM.INFO.{stream_name(name)}", "whether its stream exists (admin makes it)")
        )
    for sub in entry.subscribers:
        stream, subject = _stream_of(sub), sub.event.subject
        if sub.kind == "durable":
            publish += [
                Grant(f"$JS.API.CONSUMER.INFO.{stream}.{sub.name}", f"{sub.name}: look it up"),
                Grant(
                    f"$JS.API.CONSUMER.CREATE.{stream}.{sub.name}.{subject}", f"{sub.name}: on {subject} only"
                ),
                Grant(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{sub.name}", f"{sub.name}: fetch"),
                Grant(f"$JS.ACK.{stream}.{sub.name}.>", f"{sub.name}: ack and nak"),
            ]
        else:
            publish.append(
                Grant(
                    f"$JS.API.CONSUMER.CREATE.{stream}.*.{subject}",
                    f"{sub.name}: one replay consumer per replica, on {subject} only",
                )
            )
            # Its consumers have any name: never the name of another's durable on the same subject,
            # which creating "again" would reconfigure.
            deny += [
                Grant(
                    f"$JS.API.CONSUMER.CREATE.{stream}.{other.name}.{subject}",
                    f"{other.name} is {other.service}'s",
                )
                for other in _durables(catalogue)
                if other.service != name and _stream_of(other) == stream and other.event.subject == subject
            ]
    readers = ", ".join(sorted({s.name for s in entry.subscribers})) or "nothing"
    return NatsUser(
        name,
        f"{name}: publishes {'cws.' + name + '.>' if entry.published else 'nothing'}; consumes {readers}",
        publish=_unique(publish),
        deny=_unique(deny),
        subscribe=[Grant(f"{inbox_prefix(name)}.>", "its own replies and deliveries")],
    )


def reader_user(catalogue: list[ServiceEvents]) -> NatsUser:
    """Read-only, for consumers outside the suite: named consumers (durable or not) on any stream, their
    messages and acks; never a publish on cws.>, a stream change, or the suite's own consumers."""
    deny: list[Grant] = []
    for sub in _durables(catalogue):
        stream = _stream_of(sub)
        deny += [
            Grant(f"$JS.API.CONSUMER.*.{stream}.{sub.name}", f"{sub.name} is {sub.service}'s"),
            Grant(f"$JS.API.CONSUMER.*.{stream}.{sub.name}.>", f"{sub.name} is {sub.service}'s"),
            Grant(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{sub.name}", f"{sub.name} is {sub.service}'s"),
            Grant(f"$JS.ACK.{stream}.{sub.name}.>", f"{sub.name} is {sub.service}'s"),
        ]
    return NatsUser(
        READER_USER,
        f"{READER_USER}: read-only, for consumers outside the suite (docs/notify-and-jobs.md)",
        publish=[
            Grant("$JS.API.INFO", "account info"),
            Grant("$JS.API.STREAM.NAMES", "list the streams"),
            Grant("$JS.API.STREAM.INFO.*", "a stream's info"),
            Grant("$JS.API.CONSUMER.CREATE.*.*", "a named consumer (unnamed ones could rewrite any)"),
            Grant("$JS.API.CONSUMER.CREATE.*.*.>", "a named consumer with a filter"),
            Grant("$JS.API.CONSUMER.INFO.*.*", "its consumer's info"),
            Grant("$JS.API.CONSUMER.DELETE.*.*", "remove its consumer"),
            Grant("$JS.API.CONSUMER.MSG.NEXT.*.*", "fetch"),
            Grant("$JS.ACK.>", "ack"),
        ],
        deny=deny,
        subscribe=[Grant(f"{inbox_prefix(READER_USER)}.>", "its own replies and deliveries")],
    )


def users(catalogue: list[ServiceEvents], streams: list[str]) -> list[NatsUser]:
    admin = NatsUser(
        ADMIN_USER,
        f"{ADMIN_USER}: everything. Creates the streams (python -m libs.common.streams) and is the "
        "operator's (nats CLI); no suite process runs as it",
        unrestricted=True,
    )
    return [admin, *(service_user(e, catalogue, streams) for e in catalogue), reader_user(catalogue)]


HEADER = """\
# NATS users and what each may do: generated by `python -m tools.nats_config` from every events.py
# (and the gateway's revocation feed): do not edit; tests/test_nats_config.py fails when it drifts.
#
# One file for `make dev`, the tests, compose (mounted) and Kubernetes (deploy/k8s/nats-config.yaml).
# Start it with deploy/nats/start.sh, which refuses an unset or short password: nats-server would read
# an empty variable as an empty password. Each password comes from NATS_<USER>_PASSWORD; each process
# gets only its own, as NATS_USER / NATS_PASSWORD. There is no anonymous user (no no_auth_user).
#
# Why these rights and no more:
# - A service publishes only cws.<service>.>: nobody else can forge its events.
# - Nobody but admin configures a stream: a stream's `republish` or `sources` would move messages
#   across services. admin creates them (python -m libs.common.streams) before the services start.
# - Consumers are created by name, through the API subject that carries their filter
#   ($JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>, which the server checks against the request),
#   so each user reads only the subjects it consumes; the unnamed form could rewrite any consumer.
# - Each user subscribes only under its own inbox prefix (_INBOX_<user>): no one reads another's
#   replies or deliveries, and no one but admin subscribes to cws.>, so a consumer's deliver subject
#   can reach nobody else.
"""


def _grant_lines(grants: list[Grant], indent: str) -> list[str]:
    width = max(len(g.subject) for g in grants) + 2
    return [f"{indent}{quoted(g.subject):<{width}}  # {g.why}" for g in grants]


def quoted(subject: str) -> str:
    # Quoted, so that nats-server reads "$JS..." as text, not as a variable reference.
    return f'"{subject}"'


def render_user(user: NatsUser) -> str:
    lines = [
        "    {",
        f"      # {user.doc}",
        f"      user: {user.name}",
        f"      password: ${user.password_variable}",
    ]
    if not user.unrestricted:
        lines.append("      permissions: {")
        lines.append("        publish: {")
        if user.publish:
            lines += ["          allow: [", *_grant_lines(user.publish, "            "), "          ]"]
        else:
            lines.append('          deny: [">"]')
        if user.deny:
            lines += ["          deny: [", *_grant_lines(user.deny, "            "), "          ]"]
        lines.append("        }")
        lines += [
            "        subscribe: {",
            "          allow: [",
            *_grant_lines(user.subscribe, "            "),
            "          ]",
            "        }",
        ]
        lines.append("      }")
    lines.append("    }")
    return "\n".join(lines)


def render(catalogue: list[ServiceEvents], streams: list[str]) -> str:
    body = "\n".join(render_user(user) for user in users(catalogue, streams))
    return f"{HEADER}\njetstream: enabled\n\nauthorization {{\n  users: [\n{body}\n  ]\n}}\n"


def render_configmap(conf: str, start_script: str) -> str:
    def block(text: str) -> str:
        return "\n".join(f"    {line}" if line else "" for line in text.splitlines())

    return (
        "# deploy/nats/nats.conf and start.sh for the NATS StatefulSet (nats.yaml): generated by\n"
        "# `python -m tools.nats_config`, do not edit (kustomize may not read files outside deploy/k8s).\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: cws-nats-config\n"
        "  namespace: cws\n"
        "data:\n"
        "  nats.conf: |\n"
        f"{block(conf)}\n"
        "  start.sh: |\n"
        f"{block(start_script)}\n"
    )


def expected() -> dict[Path, str]:
    conf = render(events_catalogue.load(), stream_services())
    return {NATS_CONF: conf, K8S_CONFIGMAP: render_configmap(conf, START_SCRIPT.read_text())}


def main() -> int:
    files = expected()
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    if "--check" in sys.argv:
        if stale:
            names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
            print(f"{names} out of date; run `python -m tools.nats_config`")
            return 1
        print("nats config up to date")
        return 0
    for path in stale:
        path.write_text(files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
