"""ADMIN_IP_ALLOWLIST_CIDRS: routes marked ADMIN (gateway/access.py) only from the listed networks."""

from __future__ import annotations

import ipaddress

from gateway.middleware.common import ASGIApp, Receive, Scope, Send, is_admin_route, send_problem, state
from gateway.problems import ProblemError
from gateway.settings import GatewaySettings


class AdminAllowlistMiddleware:
    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.networks = settings.admin_networks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.networks and is_admin_route(scope):
            try:
                ip = ipaddress.ip_address(state(scope).get("client_ip", ""))
                allowed = any(ip in net for net in self.networks)
            except ValueError:
                allowed = False
            if not allowed:
                error = ProblemError(403, "ip_not_allowed", "your IP address is not on the admin allowlist")
                return await send_problem(scope, receive, send, error)
        await self.app(scope, receive, send)
