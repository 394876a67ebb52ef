"""The web console for staff and the portal pages for clients and workers (issue 16).

A client of the gateway's public REST API only: it holds no database and calls no service directly.
Pages are rendered on the server (Jinja2) and work without JavaScript; see docs/web.md."""
