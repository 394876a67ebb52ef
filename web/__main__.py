"""python -m web: serve the console and portal pages with uvicorn."""

from __future__ import annotations

import uvicorn

from web.settings import WebSettings


def main() -> None:
    settings = WebSettings()
    uvicorn.run(
        "web.app:create_app",
        factory=True,
        host=settings.web_host,
        port=settings.web_port,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # WebMiddleware decides whom to trust
        server_header=False,
    )


if __name__ == "__main__":
    main()
