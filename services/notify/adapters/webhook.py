"""Signed webhooks: exports (POSTed to EXPORT_WEBHOOK_URL) and webhook rows (POSTed to their URL).

Signing follows Standard Webhooks (the `standardwebhooks` library): `webhook-id` is the outbox row
id, the same on every retry so the receiver can drop duplicates; `webhook-timestamp` and
`webhook-signature` (v1, HMAC-SHA256 over "id.timestamp.body") let it check authenticity and age.

The SSRF guard: the URL's host must be on EXPORT_WEBHOOK_ALLOWED_HOSTS; every address it resolves
to must be public, or itself be listed (as an address or inside a listed CIDR). The request then goes
to the address that was checked, with the original Host header (and SNI for https), so a DNS answer
that changes between the check and the connect cannot redirect it. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from services.notify.adapters.base import (
    Outbound,
    PermanentFailure,
    Send,
    StatelessLane,
    TransientFailure,
)
from services.notify.settings import NotifySettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PORTS = {"http": 80, "https": 443}
SETTING = "EXPORT_WEBHOOK_ALLOWED_HOSTS"


def refused(message: str) -> PermanentFailure:
    return PermanentFailure(message, reached_remote=False)


@dataclass(frozen=True)
class Allowlist:
    names: frozenset[str]
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, entries: list[str]) -> Allowlist:
        names, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.strip().rstrip(".").lower())
        return cls(frozenset(names), tuple(networks))

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def allows_host(self, host: str) -> bool:
        if host in self.names:
            return True
        literal = ip_literal(host)
        return literal is not None and self.allows_address(literal)


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_internal(address: IPAddress) -> bool:
    """Anything that is not a public unicast address: private, loopback, link-local, reserved,
    multicast, unspecified, and the rest of the special-purpose ranges."""
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or not address.is_global
    )


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    # Every address the host resolved to, all checked; tried in order until one connects.
    addresses: tuple[IPAddress, ...]

    def url_for(self, address: IPAddress) -> str:
        literal = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


async def check_target(url: str, allowlist: Allowlist) -> Target:
    """The address to send to, or PermanentFailure when the SSRF guard refuses the URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise refused(f"webhook URL must be http or https, got {url[:200]!r}")
    if parts.username or parts.password:
        raise refused("webhook URLs with credentials are not supported")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise refused(f"webhook URL has no host: {url[:200]!r}")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise refused(f"webhook URL has an invalid port: {url[:200]!r}") from None
    if not allowlist.allows_host(host):
        raise refused(f"host {host} is not in {SETTING}")
    try:
        infos = await asyncio.to_thread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    except OSError as exc:
        raise TransientFailure(f"cannot resolve {host}: {exc}") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise TransientFailure(f"{host} resolved to no address")
    for address in addresses:
        if is_internal(address) and not allowlist.allows_address(address):
            raise refused(
                f"host {host} resolves to {address}, a private, loopback, link-local or reserved "
                f"address; list the address in {SETTING} to allow it"
            )
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return Target(scheme=scheme, host=host, port=port, path=path, addresses=tuple(addresses))


def _status_failure(response: httpx.Response, host: str) -> TransientFailure | PermanentFailure:
    text = f"webhook {host} answered {response.status_code}"
    code = response.status_code
    if 300 <= code < 400:
        return PermanentFailure(f"{text} (a redirect; redirects are not followed)")
    if code in (408, 429) or code >= 500:
        return TransientFailure(text)
    return PermanentFailure(text)


class WebhookAdapter:
    name = "webhook"

    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self.allowlist = Allowlist.parse(settings.export_webhook_allowed_hosts)
        self.client = httpx.AsyncClient(
            timeout=settings.export_webhook_timeout_seconds, follow_redirects=False, trust_env=False
        )
        self._signer: Webhook | None = None

    def lane(self) -> AbstractAsyncContextManager[Send]:
        return StatelessLane(self.send)

    def signer(self) -> Webhook:
        if self._signer is None:
            secret = self.settings.export_webhook_secret
            if not secret:
                raise refused("EXPORT_WEBHOOK_SECRET is not set: webhooks are sent signed only")
            try:
                self._signer = Webhook(secret)
            except Exception as exc:  # the library raises bare errors for bad base64
                raise refused(f"EXPORT_WEBHOOK_SECRET is not a valid whsec_ secret: {exc}") from exc
        return self._signer

    async def send(self, row: Outbound) -> None:
        if row.kind == "export":
            url = self.settings.export_webhook_url
            if not url:
                raise refused("EXPORT_MODE=webhook but EXPORT_WEBHOOK_URL is not set")
            body: Any = row.payload
        else:
            url = str(row.payload.get("url") or "")
            body = row.payload.get("body", {})
        await self.post(url, str(row.id), body)

    async def post(self, url: str, message_id: str, body: Any) -> None:
        signer = self.signer()
        target = await check_target(url, self.allowlist)
        data = json.dumps(body, separators=(",", ":"))
        now = datetime.now(UTC)
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": "cws-notify",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(message_id, now, data),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        response: httpx.Response | None = None
        error: Exception | None = None
        for address in target.addresses:
            try:
                response = await self.client.post(
                    target.url_for(address), content=data.encode(), headers=headers, extensions=extensions
                )
                break
            except httpx.ConnectError as exc:  # this address is down; the host may have another
                error = exc
            except httpx.HTTPError as exc:
                error = exc
                break
        if response is None:
            raise TransientFailure(f"webhook {target.host} unreachable: {error or 'no address'}") from error
        if not 200 <= response.status_code < 300:
            raise _status_failure(response, target.host)

    async def close(self) -> None:
        await self.client.aclose()
