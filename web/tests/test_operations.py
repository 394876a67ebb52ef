"""Today at a glance, operations (dead letters, jobs, audit log) and analytics charts in a real browser
against the real suite. Dead letters and NPS answers are written as the superuser: quicker than failing
eight deliveries or answering surveys by email link."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
from playwright.async_api import BrowserContext, Page, expect

from tools.processes import GatewayProc, WebProc
from tools.testkit import owner, sign_in
from web.routes.operations import job_health, queue_tiles
from web.tests.conftest import screenshot, sign_in_page

ZONE = "America/Edmonton"


async def _post(http: httpx.AsyncClient, url: str, headers: dict[str, str], body: Any = None) -> Any:
    response = await http.post(url, headers=headers, json=body)
    assert response.status_code in (200, 201, 202), response.text
    return response.json()


async def _booking(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], starts: datetime, client: str
) -> dict[str, Any]:
    email = f"{client.split()[0].lower()}-{uuid.uuid4().hex[:6]}@example.com"
    body = {
        "starts_at": starts.isoformat(),
        "duration_minutes": 120,
        "client_name": client,
        "client_email": email,
        "address": "10 Jasper Ave",
        "cleaning_type": "standard",
        "beds": 2,
        "baths": 1,
    }
    return await _post(http, f"{url}/v1/admin/bookings", headers, body)  # type: ignore[no-any-return]


async def _dead_letter(admin_url: str, org_id: str, *, export: bool = False) -> tuple[str, str]:
    """A dead outbox row (and for an export, its dead letter): (outbox id, target)."""
    outbox_id = str(uuid.uuid4())
    target = f"client-{uuid.uuid4().hex[:8]}@example.com" if not export else "hooks.example.com"
    payload = {"to": target, "subject": "Your booking", "text": "See you.", "email_type": "test"}
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, target, status, attempts,"
            " last_error, dead_reason, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 'dead', 8,"
            " 'SMTP 451 try later', 'retries_exhausted', now())",
            (
                outbox_id,
                org_id,
                "webhook" if export else "email",
                f"t:{outbox_id}",
                json.dumps(payload),
                target,
            ),
        )
        if export:
            await conn.execute(
                "INSERT INTO notify.export_events (id, org_id, outbox_id, target, payload, last_error, attempts)"
                " VALUES (%s, %s, %s, %s, %s, 'webhook answered 500', 8)",
                (str(uuid.uuid4()), org_id, outbox_id, target, json.dumps(payload)),
            )
    return outbox_id, target


async def _staff_user(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], role: str
) -> tuple[str, str]:
    """A user with `role` who has chosen their own password: (email, password)."""
    email = f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    created = await _post(http, f"{url}/v1/iam/users", headers, {"email": email, "role": role})
    marked = await sign_in(http, url, email, created["temp_password"])
    chosen = "Chosen-password-" + uuid.uuid4().hex[:10]
    changed = await http.post(
        f"{url}/v1/auth/change-password",
        headers=marked,
        json={"current_password": created["temp_password"], "new_password": chosen},
    )
    assert changed.status_code == 204, changed.text
    return email, chosen


def _month_back(local_now: datetime, months: int) -> datetime:
    """Noon on the 1st of the month `months` before local_now's (the 1st: never in the future)."""
    years, month = divmod(local_now.month - 1 - months, 12)
    return local_now.replace(
        year=local_now.year + years, month=month + 1, day=1, hour=12, minute=0, second=0, microsecond=0
    )


async def _csrf(page: Page) -> str:
    return await page.locator("input[name=csrf]").first.input_value()


async def test_today_shows_bookings_by_team_and_the_queues_a_role_may_see(
    web: WebProc, gateway: GatewayProc, desk: BrowserContext, http: httpx.AsyncClient, make_org, stack
) -> None:
    org = await make_org("Sparkle Today", time_zone=ZONE)
    headers = await owner(http, gateway.url, org)
    team = await _post(http, f"{gateway.url}/v1/admin/teams", headers, {"name": "Team Alpha"})
    now = datetime.now(ZoneInfo(ZONE))
    soon = now + timedelta(minutes=30)
    tomorrow = (now + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    first = await _booking(http, gateway.url, headers, soon, "Tara Today")
    await _post(
        http, f"{gateway.url}/v1/admin/bookings/{first['id']}/assign", headers, {"team_id": team["id"]}
    )
    await _booking(http, gateway.url, headers, tomorrow, "Tom Tomorrow")
    await _dead_letter(stack.admin_url, org.org_id)

    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)
    await expect(page.get_by_role("heading", name="Today at a glance")).to_be_visible()
    # Near midnight "soon" is tomorrow already: the page shows days in the org's zone, as here.
    soon_day = "Today" if soon.date() == now.date() else "Tomorrow"
    day = page.get_by_role("region", name=re.compile(f"^{soon_day},"))
    await expect(day.get_by_role("region", name=f"Team Alpha, {soon_day.lower()}")).to_contain_text(
        "Tara Today"
    )
    await expect(day).to_contain_text(soon.strftime("%H:%M"))
    later = page.get_by_role("region", name=re.compile("^Tomorrow,"))
    await expect(later.get_by_role("region", name="Unassigned, tomorrow")).to_contain_text("Tom Tomorrow")

    tiles = page.get_by_role("navigation", name="Queues")
    await expect(tiles.get_by_role("link", name=re.compile("Dead letters"))).to_contain_text("1")
    await expect(tiles.get_by_role("link", name=re.compile("Dead letters"))).to_have_class(re.compile("warn"))
    await expect(tiles.get_by_role("link", name=re.compile("To assign"))).to_contain_text("1")
    await expect(tiles.get_by_role("link", name=re.compile("Photos to review"))).to_contain_text("0")
    await expect(tiles.get_by_role("link", name=re.compile("Unpaid invoices"))).to_be_visible()
    # Whether the scheduled jobs run well (GET /v1/admin/jobs/health): an owner's tile.
    await expect(tiles.get_by_role("link", name=re.compile("Scheduled jobs"))).to_be_visible()
    await screenshot(page, "today")

    # Finance may read invoices but not the dispatch queues or the dead letters: those tiles go.
    email, password = await _staff_user(http, gateway.url, headers, "FINANCE")
    await page.get_by_role("button", name="Sign out").click()
    await sign_in_page(page, web.url, email, password)
    await expect(tiles.get_by_role("link", name=re.compile("Unpaid invoices"))).to_be_visible()
    for gone in ("To assign", "Photos to review", "Dead letters", "Scheduled jobs"):
        await expect(tiles.get_by_role("link", name=re.compile(gone))).to_have_count(0)
    await expect(page.get_by_text("Tom Tomorrow")).to_be_visible()


async def test_operations_replays_a_dead_letter_and_pages_the_audit_log(
    web: WebProc, gateway: GatewayProc, desk: BrowserContext, http: httpx.AsyncClient, make_org, stack
) -> None:
    org = await make_org("Sparkle Ops", time_zone=ZONE)
    headers = await owner(http, gateway.url, org)
    _, target = await _dead_letter(stack.admin_url, org.org_id)
    await _dead_letter(stack.admin_url, org.org_id, export=True)
    await _staff_user(http, gateway.url, headers, "VIEWER")  # something in the audit log
    rival = await make_org("Rival Ops")
    rival_dead, _ = await _dead_letter(stack.admin_url, rival.org_id)

    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Operations").click()
    letters = page.get_by_role("region", name=re.compile("^Dead letters"))
    await expect(letters).to_contain_text("2 outbox, 1 export")
    jobs = page.get_by_role("region", name="Scheduled jobs")
    await expect(jobs).to_contain_text("Error messages and runners are the installation's operators'")
    await expect(jobs).not_to_contain_text("Only an owner or admin")
    audit = page.get_by_role("region", name="Audit log")
    rows = audit.get_by_role("row")
    await expect(rows.nth(1)).to_be_visible()
    await screenshot(page, "operations")

    await (
        letters.get_by_role("row", name=re.compile(re.escape(target)))
        .get_by_role("button", name="Replay")
        .click()
    )
    await expect(page.get_by_role("status")).to_contain_text("Queued for delivery again.")
    await expect(letters.get_by_role("row", name=re.compile(re.escape(target)))).to_have_count(0)

    # The audit log filters by action: every row left has that action.
    action = (await rows.nth(1).get_by_role("cell").nth(2).inner_text()).strip()
    await audit.get_by_label("Action").fill(action)
    await audit.get_by_role("button", name="Filter").click()
    cells = page.get_by_role("region", name="Audit log").get_by_role("row")
    count = await cells.count()
    assert count >= 2
    for index in range(1, count):
        await expect(cells.nth(index).get_by_role("cell").nth(2)).to_have_text(action)
    await page.get_by_label("Action").fill("no.such.action")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_text("Nothing recorded for “no.such.action”.")).to_be_visible()

    # BOLA: another org's dead letter is the web's 404 and stays dead.
    csrf = await _csrf(page)
    answer = await page.request.post(
        f"{web.url}/console/operations/dead-letters/outbox/{rival_dead}/replay", form={"csrf": csrf}
    )
    assert answer.status == 404, await answer.text()
    rival_headers = await owner(http, gateway.url, rival)
    still = (await http.get(f"{gateway.url}/v1/admin/queue/dlq", headers=rival_headers)).json()
    assert [item["outbox_id"] or item["id"] for item in still["items"]] == [rival_dead]


async def test_analytics_draws_nps_cohorts_and_the_funnel(
    web: WebProc, gateway: GatewayProc, desk: BrowserContext, http: httpx.AsyncClient, make_org, stack
) -> None:
    org = await make_org("Sparkle Analytics", time_zone=ZONE)
    headers = await owner(http, gateway.url, org)
    for name in ("Lee Lead", "Lou Lead"):
        lead = await http.post(
            f"{gateway.url}/v1/leads",
            headers={"X-Test-Org": org.org_id},
            json={
                "name": name,
                "phone": "780-555-0142",
                "email": f"lead-{uuid.uuid4().hex[:8]}@example.com",
                "postal_code": "T5J0N3",
                "structured_inputs": {"beds": 2, "baths": 1, "cleaning_type": "standard"},
            },
        )
        assert lead.status_code == 201, lead.text
    start = datetime.now(UTC) + timedelta(days=2)
    bookings = [
        await _booking(http, gateway.url, headers, start + timedelta(hours=3 * i), f"Cli{i} Ent")
        for i in range(6)
    ]
    scores = [10, 9, 9, 7, 5, 10]
    now = datetime.now(UTC)
    local_now = now.astimezone(ZoneInfo(ZONE))
    async with await psycopg.AsyncConnection.connect(stack.admin_url, autocommit=True) as conn:
        for index, (booking, score) in enumerate(zip(bookings, scores, strict=True)):
            # Answers over six weeks.
            await conn.execute(
                "INSERT INTO booking.nps_responses (id, org_id, booking_id, score, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (str(uuid.uuid4()), org.org_id, booking["id"], score, now - timedelta(days=7 * index + 1)),
            )
            # Cohorts by month of first booking (in the org's zone): one customer in each of the
            # three months before this one, three in this one, whatever day of the month it is.
            served = _month_back(local_now, index + 1 if index < 3 else 0)
            await conn.execute(
                "UPDATE booking.bookings SET starts_at = %s, ends_at = %s WHERE id = %s",
                (served, served + timedelta(hours=2), booking["id"]),
            )

    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Analytics").click()
    # (4 promoters - 1 detractor) / 6 answers
    await expect(page.get_by_test_id("nps-score")).to_have_text("50.0")
    mix = page.get_by_role("img", name=re.compile("^NPS answers"))
    await expect(mix).to_have_attribute("aria-label", "NPS answers. Promoters: 4; Passives: 1; Detractors: 1")
    await expect(page.get_by_role("img", name=re.compile("^Average score by week"))).to_be_visible()
    funnel = page.get_by_role("img", name=re.compile("^Funnel"))
    await expect(funnel).to_have_attribute("aria-label", re.compile("Leads: 2; Bookings: 6"))
    customers = page.get_by_role("img", name=re.compile("^New customers by month"))
    await expect(customers).to_have_attribute(
        "aria-label", re.compile(r": 1; [0-9-]+: 1; [0-9-]+: 1; [0-9-]+: 3$")
    )
    await expect(page.get_by_role("img", name=re.compile("^Repeat rate by cohort"))).to_be_visible()
    await screenshot(page, "analytics")

    # The period: a gateway refusal (over a year) beside its field, and the web's own check.
    await page.get_by_label("From").fill("2020-01-01")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("#e-from")).to_be_visible()
    await expect(page.get_by_label("From")).to_have_attribute("aria-invalid", "true")
    await page.get_by_label("From").fill("2030-02-01")
    await page.get_by_label("To (included)").fill("2030-01-01")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("#e-to")).to_have_text("must not be before from")
    # A quiet period is an empty state, not an empty frame.
    await page.get_by_label("From").fill("2024-01-01")
    await page.get_by_label("To (included)").fill("2024-01-31")
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_text("NPS answers: no answers in this period")).to_be_visible()


def test_job_health_tells_failing_stale_and_never_run_apart() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    ago = lambda minutes: (now - timedelta(minutes=minutes)).isoformat()  # noqa: E731
    base = {"name": "digest", "interval_seconds": 600, "consecutive_failures": 0, "last_outcome": "ok"}
    assert job_health({**base, "last_success_at": ago(5)}, now).state == "ok"
    assert job_health({**base, "last_success_at": ago(31)}, now).state == "stale"  # > 3 intervals
    assert job_health({**base, "consecutive_failures": 2, "last_outcome": "failed"}, now).state == "failing"
    assert job_health({**base, "last_outcome": None}, now).state == "never"
    assert job_health({**base, "last_started_at": ago(60), "last_outcome": None}, now).state == "stale"


def test_tiles_leave_out_what_the_role_may_not_read_and_warn_on_failing_jobs() -> None:
    failing = job_health(
        {"name": "digest", "consecutive_failures": 3, "last_outcome": "failed"}, datetime.now(UTC)
    )
    tiles = queue_tiles(None, [{}] * 100, None, {"total": 0}, [failing])
    assert [t.label for t in tiles] == ["Photos to review", "Dead letters", "Scheduled jobs"]
    photos, dead, jobs = tiles
    assert photos.count == "100+"  # the photo queue answers at most a page, with no total
    assert not dead.warn
    assert jobs.warn and jobs.note == "digest failing"


async def test_a_service_that_is_down_leaves_its_part_out_and_says_so(
    stack: Any, gateways: Any, desk: BrowserContext, make_org
) -> None:
    """Notify unreachable (nothing listens on port 9): the today and operations pages still show the
    rest, and name what they could not show, instead of failing whole (bench saw a 503 page)."""
    from tools.processes import web_proc

    gateway = gateways.get(NOTIFY_GRPC_TARGET="127.0.0.1:9", JOBS_GRPC_TARGET="127.0.0.1:9")
    web = web_proc(stack.env(), stack.work_dir / "logs", gateway.url, label="web-notify-down").start()
    try:
        await web.wait_ready_async()
        org = await make_org("Sparkle Partial")
        page = await desk.new_page()
        await sign_in_page(page, web.url, org.owner_email, org.owner_password)
        await expect(page.get_by_role("heading", level=1)).to_have_text("Today at a glance")
        await expect(page.get_by_role("alert")).to_contain_text("dead letters")
        await expect(page.get_by_role("link", name="Photos to review")).to_be_visible()  # the rest is there
        await page.goto(web.url + "/console/operations")
        await expect(page.get_by_role("alert")).to_contain_text("dead letters")
        await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    finally:
        web.stop()


def test_the_invoice_tile_counts_the_queues_totals_not_a_page() -> None:
    tiles = queue_tiles(None, None, {"total": 412, "items": []}, None, None, {"total": 37})
    assert [(t.label, t.count, t.note, t.warn) for t in tiles] == [
        ("Unpaid invoices", "412", "37 overdue", True)
    ]
