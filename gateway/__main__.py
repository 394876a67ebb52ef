"""python -m gateway: serve the gateway with uvicorn (uvloop and httptools when installed)."""

from __future__ import annotations

import uvicorn

from gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=settings.gateway_host,
        port=settings.gateway_port,
        workers=settings.gateway_workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # ClientIpMiddleware decides whom to trust
        server_header=False,
    )


if __name__ == "__main__":
    main()
