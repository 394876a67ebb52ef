"""Client and worker portals at the gateway, against the real processes.

Following a magic link needs the token, which normally only reaches the client by email; these tests
use a second IAM process with CLIENT_MAGIC_LINK_IN_RESPONSE=true (the `magic` fixtures, conftest.py),
and check with the suite's ordinary IAM that the link is absent by default. How a link becomes a
session (once, by a POST) is tested in test_portal_sessions.py."""

from __future__ import annotations

import time
import uuid

import jwt
import nats
import psycopg
from cws.iam.v1 import events_pb2

from services.booking.tests.helpers import applied_profile, create_booking, slot
from services.booking.tests.portal import (
    add_worker,
    assign,
    client_session,
    confirm,
    follow,
    magic_link,
    set_cookie,
    token_of,
    worker_session,
)
from tools import testkit
from tools.processes import DEV_SECRETS
from tools.testkit import assert_clean, assert_problem, bearer, eventually


def expired_token(kind: str, secret: str, org_id: str, subject: str, email: str = "") -> str:
    now = int(time.time())
    claims = {"typ": kind, "org": org_id, "sub": subject, "email": email, "iat": now - 7200, "exp": now - 60}
    return jwt.encode(claims, secret, algorithm="HS256")


def tampered(token: str) -> str:
    head, body, signature = token.split(".")
    return ".".join([head, body, ("A" if signature[0] != "A" else "B") + signature[1:]])


# --- client portal -----------------------------------------------------------------------------


async def test_login_request_is_always_202_and_records_an_event_without_a_token(
    gateway, http, make_org, stack
):
    org = await make_org()
    headers = {"X-Test-Org": org.org_id}
    nc = await stack.nats.connect_as("admin")  # an observer of the whole stream: the operator's user
    try:
        sub = await nc.jetstream().subscribe(
            "cws.iam.client_login.>", ordered_consumer=True, deliver_policy=nats.js.api.DeliverPolicy.NEW
        )
        for email in ("Known.Client@Example.com", f"nobody-{uuid.uuid4().hex[:6]}@example.com"):
            response = await http.post(
                f"{gateway.url}/client/login/request", json={"email": email}, headers=headers
            )
            assert response.status_code == 202, response.text
            assert response.json() == {"status": "sent"}  # no link unless CLIENT_MAGIC_LINK_IN_RESPONSE
        seen = []

        async def both() -> bool:
            try:
                message = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                return False
            if message.headers and message.headers.get("cws-org-id") == org.org_id:
                seen.append(message)
            return len(seen) >= 2

        await eventually(both, timeout=5, message="two client login events")
    finally:
        await nc.close()
    assert [m.subject for m in seen] == ["cws.iam.client_login.requested"] * 2
    event = events_pb2.ClientLoginRequested.FromString(seen[0].data)
    assert (event.org_id, event.email) == (org.org_id, "known.client@example.com")
    assert all(b"eyJ" not in m.data for m in seen)  # no JWT travels in the event

    # An unknown org key answers the same; a malformed email is a clear 422.
    unknown = await http.post(
        f"{gateway.url}/client/login/request", json={"email": "a@example.com", "org_key": "no-such-org"}
    )
    assert unknown.status_code == 202 and unknown.json() == {"status": "sent"}
    bad = await http.post(
        f"{gateway.url}/client/login/request", json={"email": "not-an-email"}, headers=headers
    )
    assert_problem(bad, 422)
    assert_problem(await http.post(f"{gateway.url}/client/login/request", json={}, headers=headers), 422)


async def test_magic_link_flow_with_cookie_and_with_bearer(magic_gateway, http, make_org):
    url = magic_gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    mine_later = await create_booking(http, url, owner, starts_at=slot(72), client_email="casey@example.com")
    mine_soon = await create_booking(
        http, url, owner, starts_at=slot(24), client_email="Casey@Example.com", notes="gate code 4411"
    )
    mine_past = await create_booking(
        http, url, owner, starts_at=slot(-20), duration_minutes=60, client_email="casey@example.com"
    )
    theirs = await create_booking(http, url, owner, client_email="robin@example.com")

    link = await magic_link(http, url, " CASEY@example.com ", {"X-Test-Org": org.org_id})
    page = await http.get(url + link)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text
    assert "casey@example.com" in page.text and "set-cookie" not in page.headers
    signed_in = await http.post(f"{url}/client/login/confirm", data={"token": token_of(link)})
    assert signed_in.status_code == 200, signed_in.text
    body = signed_in.json()
    assert {k: body[k] for k in ("ok", "org_id", "email")} == {
        "ok": True,
        "org_id": org.org_id,
        "email": "casey@example.com",
    }
    assert "session_token" not in body  # a browser's form post: the session stays in the HttpOnly cookie
    assert signed_in.headers["cache-control"] == "no-store"
    cookie = set_cookie(signed_in, "client_session")
    assert cookie["httponly"] and cookie["samesite"].lower() == "lax" and cookie["path"] == "/"
    assert not cookie["secure"]  # APP_ENV=test; Secure everywhere else
    assert 24 * 3600 - 60 <= int(cookie["max-age"]) <= 24 * 3600  # CLIENT_PORTAL_SESSION_TTL_MINUTES
    token = cookie.value

    # First as a browser would: the client's own cookie jar sends what the confirm set.
    # Then with an explicit cookie header, and as a bearer token, with the jar emptied.
    for credentials in ({}, {"Cookie": f"client_session={token}"}, bearer(token)):
        listed = await http.get(f"{url}/v1/client/portal/bookings", headers=credentials)
        assert listed.status_code == 200, listed.text
        assert [b["id"] for b in listed.json()["bookings"]] == [mine_soon["id"], mine_later["id"]]
        assert listed.json()["total"] == 2
        everything = await http.get(
            f"{url}/v1/client/portal/bookings", params={"include_past": "true"}, headers=credentials
        )
        assert [b["id"] for b in everything.json()["bookings"]] == [
            mine_past["id"],
            mine_soon["id"],
            mine_later["id"],
        ]
        one = await http.get(f"{url}/v1/client/portal/bookings/{mine_soon['id']}", headers=credentials)
        assert one.status_code == 200, one.text
        body = one.json()
        assert body["id"] == mine_soon["id"] and body["status"] == "pending"
        assert body["starts_at_local"] and body["total_before_tax_cents"] > 0
        # Internal notes and staffing never reach the client.
        assert "notes" not in body and "worker_ids" not in body and "gate code" not in one.text
        assert_problem(
            await http.get(f"{url}/v1/client/portal/bookings/{theirs['id']}", headers=credentials), 404
        )
        assert_problem(
            await http.get(f"{url}/v1/client/portal/bookings/{uuid.uuid4()}", headers=credentials), 404
        )
        assert_problem(
            await http.get(f"{url}/v1/client/portal/bookings/not-a-uuid", headers=credentials), 422
        )
        http.cookies.clear()


async def test_org_key_selects_the_org_of_the_magic_link(magic_gateway, http, make_org, stack):
    url = magic_gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    booking = await create_booking(http, url, owner, client_email="keyed@example.com")
    key, _, _ = await applied_profile(stack, org.org_id)
    for headers, body in (({"X-Org-Key": key}, {}), ({}, {"org_key": key})):
        response = await http.post(
            f"{url}/client/login/request", json={"email": "keyed@example.com", **body}, headers=headers
        )
        assert response.status_code == 202, response.text
        signed_in = await follow(http, url, "client", response.json()["magic_link"])
        assert signed_in.json()["org_id"] == org.org_id
        listed = await http.get(
            f"{url}/v1/client/portal/bookings", headers=bearer(set_cookie(signed_in, "client_session").value)
        )
        assert [b["id"] for b in listed.json()["bookings"]] == [booking["id"]]


async def test_another_orgs_booking_is_404_even_with_a_valid_token(magic_gateway, http, make_org):
    url = magic_gateway.url
    org_a, org_b = await make_org(), await make_org()
    owner_b = await testkit.owner(http, url, org_b)
    # Same client email in both orgs: the token of org A still never reaches org B's booking.
    in_b = await create_booking(http, url, owner_b, client_email="shared@example.com")
    token_a = await client_session(http, url, org_a.org_id, "shared@example.com")
    assert_problem(
        await http.get(f"{url}/v1/client/portal/bookings/{in_b['id']}", headers=bearer(token_a)), 404
    )
    listed = await http.get(f"{url}/v1/client/portal/bookings", headers=bearer(token_a))
    assert listed.status_code == 200 and listed.json() == {"bookings": [], "total": 0}
    # X-Test-Org cannot move a portal caller into another org either.
    moved = await http.get(
        f"{url}/v1/client/portal/bookings/{in_b['id']}",
        headers={**bearer(token_a), "X-Test-Org": org_b.org_id},
    )
    assert_problem(moved, 404)


async def test_tampered_expired_and_foreign_tokens_are_401(magic_gateway, http, make_org):
    url = magic_gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    good = await client_session(http, url, org.org_id, "casey@example.com")
    secret = DEV_SECRETS["CLIENT_PORTAL_SECRET"]
    bad_tokens = {
        "tampered": tampered(good),
        "expired": expired_token(
            "client_portal", secret, org.org_id, "casey@example.com", "casey@example.com"
        ),
        "wrong key": jwt.encode(
            {"typ": "client_portal", "org": org.org_id, "sub": "x", "email": "x@example.com", "exp": 2**31},
            "another-secret-of-sufficient-length-0123456789",
            algorithm="HS256",
        ),
        "worker token": jwt.encode(
            {"typ": "worker_portal", "org": org.org_id, "sub": str(uuid.uuid4()), "exp": 2**31},
            DEV_SECRETS["WORKER_PORTAL_SECRET"],
            algorithm="HS256",
        ),
        "staff access token": owner["Authorization"].split(" ", 1)[1],
        "garbage": "not-a-token",
    }
    portal = f"{url}/v1/client/portal/bookings"
    for label, token in bad_tokens.items():
        for credentials in ({"Cookie": f"client_session={token}"}, bearer(token)):
            body = assert_problem(await http.get(portal, headers=credentials), 401)
            assert body["status"] == 401, label
        assert_problem(await http.get(f"{url}/client/login/callback", params={"token": token}), 401)
        assert_problem(await confirm(http, url, "client", token), 401)
    assert_problem(await http.get(portal), 401, "unauthenticated")
    assert_problem(await http.get(f"{url}/client/login/callback"), 422)
    # A token issued for a bare client id (no email) must not open an unscoped view of the org.
    no_email = jwt.encode(
        {"typ": "client_portal", "org": org.org_id, "sub": "client-7", "email": "", "exp": 2**31},
        secret,
        algorithm="HS256",
    )
    assert_problem(await http.get(portal, headers=bearer(no_email)), 401)
    assert_problem(await http.get(f"{url}/client/login/callback", params={"token": no_email}), 401)
    assert_problem(await confirm(http, url, "client", no_email), 401)
    assert (await http.get(portal, headers=bearer(good))).status_code == 200


# --- worker portal -----------------------------------------------------------------------------


async def test_worker_sees_starts_and_completes_only_their_jobs(gateway, http, make_org, stack):
    url = gateway.url
    org, other_org = await make_org(), await make_org()
    owner = await testkit.owner(http, url, org)
    dispatcher = await testkit.staff(http, url, owner, "DISPATCHER")
    ana, ben = add_worker(stack, org.org_id, "Ana"), add_worker(stack, org.org_id, "Ben")
    first = await create_booking(http, url, owner, starts_at=slot(24), notes="key under the mat")
    second = await create_booking(http, url, owner, starts_at=slot(48))
    bens = await create_booking(http, url, owner, starts_at=slot(24))
    unassigned = await create_booking(http, url, owner, starts_at=slot(30))
    for booking in (first, second, bens, unassigned):
        assert (
            await http.post(f"{url}/v1/admin/bookings/{booking['id']}/confirm", headers=owner)
        ).status_code == 200
    assign(stack, org.org_id, first, ana)
    assign(stack, org.org_id, second, ana)
    assign(stack, org.org_id, bens, ben)
    # An assigned job in another org: its id is invisible to a token of this org.
    other_owner = await testkit.owner(http, url, other_org)
    elsewhere = await create_booking(http, url, other_owner, starts_at=slot(26))
    assign(stack, other_org.org_id, elsewhere, add_worker(stack, other_org.org_id, "Dee"))

    token = await worker_session(http, url, dispatcher, ana)
    cookie = {"Cookie": f"worker_session={token}"}
    jobs = await http.get(f"{url}/v1/worker/portal/jobs", headers=cookie)
    assert jobs.status_code == 200, jobs.text
    assert [j["id"] for j in jobs.json()["jobs"]] == [first["id"], second["id"]]
    job = (await http.get(f"{url}/v1/worker/portal/jobs/{first['id']}", headers=bearer(token))).json()
    assert job["notes"] == "key under the mat" and job["worker_ids"] == [ana]
    assert "total_before_tax_cents" not in job and "client_email" not in job

    for other in (bens, unassigned, elsewhere):
        assert_problem(await http.get(f"{url}/v1/worker/portal/jobs/{other['id']}", headers=cookie), 404)
        assert_problem(
            await http.post(f"{url}/v1/worker/portal/jobs/{other['id']}/start", headers=cookie), 404
        )
        assert_problem(
            await http.post(f"{url}/v1/worker/portal/jobs/{other['id']}/complete", headers=cookie), 404
        )
    assert_problem(await http.post(f"{url}/v1/worker/portal/jobs/{first['id']}/cancel", headers=cookie), 404)

    started = await http.post(f"{url}/v1/worker/portal/jobs/{first['id']}/start", headers=cookie)
    assert started.status_code == 200 and started.json()["status"] == "in_progress", started.text
    completed = await http.post(f"{url}/v1/worker/portal/jobs/{first['id']}/complete", headers=bearer(token))
    assert completed.status_code == 200 and completed.json()["status"] == "completed", completed.text
    assert "nps_token" not in completed.json()  # the survey is the client's, not the worker's
    assert_problem(await http.post(f"{url}/v1/worker/portal/jobs/{first['id']}/start", headers=cookie), 409)
    # Ben's job is untouched; the owner sees the worker's progress.
    assert (await http.get(f"{url}/v1/admin/bookings/{bens['id']}", headers=owner)).json()[
        "status"
    ] == "confirmed"
    assert (await http.get(f"{url}/v1/admin/bookings/{first['id']}", headers=owner)).json()[
        "status"
    ] == "completed"


async def test_worker_links_need_dispatch_roles_and_valid_tokens(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    worker = add_worker(stack, org.org_id, "Cleo")
    for role in ("VIEWER", "FINANCE"):
        staff = await testkit.staff(http, url, owner, role)
        assert_problem(await http.post(f"{url}/v1/admin/workers/{worker}/portal-link", headers=staff), 403)
    assert_problem(await http.post(f"{url}/v1/admin/workers/{worker}/portal-link"), 401)
    assert_problem(await http.post(f"{url}/v1/admin/workers/not-a-uuid/portal-link", headers=owner), 422)
    # No link for a worker this org does not have: unknown, or another org's.
    other_org = await make_org()
    for stranger in (str(uuid.uuid4()), add_worker(stack, other_org.org_id, "Elsewhere")):
        assert_problem(await http.post(f"{url}/v1/admin/workers/{stranger}/portal-link", headers=owner), 404)
    retired = add_worker(stack, org.org_id, "Retired")
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute("UPDATE booking.workers SET active = false WHERE id = %s", (retired,))
    assert_problem(
        await http.post(f"{url}/v1/admin/workers/{retired}/portal-link", headers=owner),
        409,
        "worker_inactive",
    )

    token = await worker_session(http, url, owner, worker)
    secret = DEV_SECRETS["WORKER_PORTAL_SECRET"]
    client_secret = DEV_SECRETS["CLIENT_PORTAL_SECRET"]
    for bad in (
        tampered(token),
        expired_token("worker_portal", secret, org.org_id, worker),
        jwt.encode(
            {"typ": "client_portal", "org": org.org_id, "sub": "a@example.com", "exp": 2**31}, client_secret
        ),
        owner["Authorization"].split(" ", 1)[1],
    ):
        assert_problem(await http.get(f"{url}/v1/worker/portal/jobs", headers=bearer(bad)), 401)
        assert_problem(
            await http.get(f"{url}/v1/worker/portal/jobs", headers={"Cookie": f"worker_session={bad}"}), 401
        )
        assert_problem(await http.get(f"{url}/worker/login/callback", params={"token": bad}), 401)
        assert_problem(await confirm(http, url, "worker", bad), 401)
    assert_problem(await http.get(f"{url}/v1/worker/portal/jobs"), 401)
    # A client session is no worker session, and the other way round.
    assert_problem(await http.get(f"{url}/v1/client/portal/bookings", headers=bearer(token)), 401)
    fine = await http.get(f"{url}/v1/worker/portal/jobs", headers=bearer(token))
    assert fine.status_code == 200 and fine.json() == {"jobs": [], "total": 0}
    assert_clean(fine)
