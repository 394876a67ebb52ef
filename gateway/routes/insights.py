"""NPS survey answers (public, by the one-use token a completed booking yields) and Analytics v1
(seed 002): NPS distribution and trends, and booking cohorts, for OWNER, ADMIN and FINANCE only.
Analytics answers are aggregates: no comments, names or emails."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from cws.booking.v1 import booking_pb2
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import ORJSONResponse
from pydantic import AwareDatetime, Field

from gateway.access import ADMIN, PUBLIC
from gateway.deps import require_roles
from gateway.principal import Principal
from gateway.routes import convert
from gateway.schemas import Strict
from gateway.stubs import Booking
from libs.common.roles import ANALYSTS

router = APIRouter(tags=["insights"])


class NpsIn(Strict):
    score: Annotated[int, Field(ge=0, le=10, description="0 (not at all likely) to 10 (extremely likely)")]
    comment: Annotated[str, Field(max_length=2000)] = ""


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _trend(points: Iterable[booking_pb2.NpsTrendPoint]) -> list[dict[str, Any]]:
    return [
        {"period": p.period, "responses": p.responses, "average_score": round(p.average_score, 2)}
        for p in points
    ]


@router.post(
    "/v1/public/nps/{token}",
    status_code=201,
    summary="Answer an NPS survey (one use per token)",
    dependencies=[PUBLIC],
)
async def submit_nps(
    token: Annotated[str, Path(min_length=1, max_length=200)], body: NpsIn, booking: Booking
) -> ORJSONResponse:
    await booking.SubmitNps(booking_pb2.SubmitNpsRequest(token=token, score=body.score, comment=body.comment))
    # The token is a credential in the URL: nothing about this answer should be cached.
    return ORJSONResponse({"status": "recorded"}, status_code=201, headers={"Cache-Control": "no-store"})


@router.get(
    "/v1/admin/analytics/nps",
    summary="NPS distribution and weekly/monthly average trends (org time zone); aggregates only",
    dependencies=[ADMIN],
)
async def nps_analytics(
    booking: Booking,
    from_: AwareDatetime | None = Query(None, alias="from", description="Default: a year before `to`"),
    to: AwareDatetime | None = Query(None, description="Default: now"),
    principal: Principal = Depends(require_roles(*ANALYSTS)),
) -> dict[str, Any]:
    message = booking_pb2.NpsAnalyticsRequest()
    if from_:
        message.from_time.CopyFrom(convert.timestamp(from_, "from"))
    if to:
        message.to_time.CopyFrom(convert.timestamp(to, "to"))
    found = await booking.NpsAnalytics(message)
    return {
        "responses": found.responses,
        "promoters": found.promoters,
        "passives": found.passives,
        "detractors": found.detractors,
        "promoters_pct": _pct(found.promoters, found.responses),
        "passives_pct": _pct(found.passives, found.responses),
        "detractors_pct": _pct(found.detractors, found.responses),
        "nps": found.nps,
        "weekly": _trend(found.weekly),
        "monthly": _trend(found.monthly),
    }


@router.get(
    "/v1/admin/analytics/cohorts",
    summary="Customers by first-booking month, with repeat counts and rates; aggregates only",
    dependencies=[ADMIN],
)
async def cohort_analytics(
    booking: Booking,
    months: int = Query(12, ge=1, le=60, description="How many months back, this one included"),
    principal: Principal = Depends(require_roles(*ANALYSTS)),
) -> dict[str, Any]:
    found = await booking.CohortAnalytics(booking_pb2.CohortAnalyticsRequest(months=months))
    return {
        "months": months,
        "cohorts": [
            {
                "month": c.month,
                "customers": c.customers,
                "repeat_customers": c.repeat_customers,
                "repeat_rate": c.repeat_rate,
            }
            for c in found.cohorts
        ],
    }
