"""The client's IP address, for rate limits, the admin allowlist and the request context."""

from __future__ import annotations

import ipaddress

from starlette.datastructures import Headers

from gateway.middleware.common import ASGIApp, Receive, Scope, Send, state
from gateway.settings import GatewaySettings


class ClientIpMiddleware:
    """X-Forwarded-For is believed only when the direct peer is a trusted proxy; the client is the
    first address, from the right, that is not a trusted proxy."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.trust = settings.trust_proxy_headers
        self.proxies = settings.proxy_networks

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    def resolve(self, peer: str, forwarded_for: str) -> str:
        if not (self.trust and forwarded_for and self._trusted(peer)):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # garbage in the header: fall back to what we know
        return hops[0] if hops else peer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = (scope.get("client") or ("", 0))[0]
            state(scope)["client_ip"] = self.resolve(peer, Headers(scope=scope).get("x-forwarded-for", ""))
        await self.app(scope, receive, send)
