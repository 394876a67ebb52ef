"""Teams, workers, blackouts, assignment, scheduling suggestions and conflicts, assignment queue."""

from __future__ import annotations


class SchedulingApi:
    pass
