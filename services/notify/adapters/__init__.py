"""Adapters for what leaves the suite: email (SMTP, SendGrid) and signed webhooks (exports, webhooks).

Each adapter sends one outbox row and either returns (accepted by the remote) or raises a
`DeliveryFailure` saying whether trying again later could help."""
