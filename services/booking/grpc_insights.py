"""NPS submission and analytics (aggregates only, no PII)."""

from __future__ import annotations


class InsightsApi:
    pass
