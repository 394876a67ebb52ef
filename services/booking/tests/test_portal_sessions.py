"""Portal links are used once, for a revocable portal session (issue 9, hole 8), through the gateway
in front of the real processes.

The attacks: a link used a second time; the link itself presented as a session (the old behaviour);
a GET of the link that signs someone in (login CSRF, mail scanners); another site posting a link
(login CSRF); a session kept after logout, after the worker was deactivated or deleted, or after an
admin ended the worker's portal access; the tokens in the gateway's or IAM's logs. Each is refused
here."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import psycopg

from services.booking.tests.helpers import create_booking, slot
from services.booking.tests.portal import (
    COOKIE,
    assign,
    confirm,
    magic_link,
    session_of,
    set_cookie,
    token_of,
    worker_link,
)
from tools import testkit
from tools.testkit import assert_problem, bearer, eventually

BOOKINGS = "/v1/client/portal/bookings"
JOBS = "/v1/worker/portal/jobs"
CROSS_SITE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}


async def new_worker(http: httpx.AsyncClient, url: str, owner: dict[str, str], name: str) -> str:
    created = await http.post(f"{url}/v1/admin/workers", json={"name": name}, headers=owner)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def status_with(http: httpx.AsyncClient, url: str, path: str, token: str) -> int:
    return (await http.get(url + path, headers=bearer(token))).status_code


# --- one link, one session -----------------------------------------------------------------------


async def test_the_link_page_signs_nobody_in_and_the_link_is_used_once(magic_gateway, http, make_org):
    url = magic_gateway.url
    org = await make_org()
    link = await magic_link(http, url, "once@example.com", {"X-Test-Org": org.org_id})
    token = token_of(link)

    # The GET, however often (a mail scanner, a preview, the person), sets no cookie and uses nothing.
    for _ in range(2):
        page = await http.get(url + link)
        assert page.status_code == 200, page.text
        assert "set-cookie" not in page.headers and not http.cookies
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "<script" not in page.text  # nothing posts the form but the person
        assert re.search(r'<form method="post" action="confirm">', page.text)
        assert f'name="token" value="{token}"' in page.text

    signed_in = await confirm(http, url, "client", token)
    assert signed_in.status_code == 200, signed_in.text
    session = set_cookie(signed_in, COOKIE["client"]).value
    http.cookies.clear()
    assert session != token and session.startswith("ps.")
    assert await status_with(http, url, BOOKINGS, session) == 200

    # Used: refused at the POST, and the page says so too. The session it opened stands.
    assert_problem(await confirm(http, url, "client", token), 401, "portal_link_used")
    assert_problem(await http.get(url + link), 401, "portal_link_used")
    assert await status_with(http, url, BOOKINGS, session) == 200


async def test_two_concurrent_confirms_of_one_link_open_one_session(magic_gateway, http, make_org):
    url = magic_gateway.url
    org = await make_org()
    token = token_of(await magic_link(http, url, "race@example.com", {"X-Test-Org": org.org_id}))
    answers = await asyncio.gather(*(confirm(http, url, "client", token) for _ in range(6)))
    assert sorted(a.status_code for a in answers) == [200] + [401] * 5, [a.text for a in answers]


async def test_the_link_itself_is_no_session(magic_gateway, http, make_org):
    """The old behaviour: the magic link's token was the session cookie. Before and after it is used,
    as a cookie or a bearer, it opens nothing."""
    url = magic_gateway.url
    org = await make_org()
    link = await magic_link(http, url, "old@example.com", {"X-Test-Org": org.org_id})
    owner = await testkit.owner(http, url, org)
    wlink = await worker_link(http, url, owner, await new_worker(http, url, owner, "Old Ways"))
    for stage in ("unused", "used"):
        for path, token, cookie in (
            (BOOKINGS, token_of(link), "client_session"),
            (JOBS, token_of(wlink), "worker_session"),
        ):
            for credentials in (bearer(token), {"Cookie": f"{cookie}={token}"}):
                assert_problem(await http.get(url + path, headers=credentials), 401)
        if stage == "unused":
            assert (await confirm(http, url, "client", token_of(link))).status_code == 200
            assert (await confirm(http, url, "worker", token_of(wlink))).status_code == 200
            http.cookies.clear()


async def test_a_json_client_gets_the_session_token_and_a_browser_does_not(magic_gateway, http, make_org):
    url = magic_gateway.url
    org = await make_org()
    headers = {"X-Test-Org": org.org_id}
    as_json = await http.post(
        f"{url}/client/login/confirm",
        json={"token": token_of(await magic_link(http, url, "api@example.com", headers))},
    )
    assert as_json.status_code == 200, as_json.text
    session = as_json.json()["session_token"]
    assert session == set_cookie(as_json, COOKIE["client"]).value
    http.cookies.clear()
    assert await status_with(http, url, BOOKINGS, session) == 200
    accepting = await http.post(
        f"{url}/client/login/confirm",
        data={"token": token_of(await magic_link(http, url, "api@example.com", headers))},
        headers={"Accept": "application/json"},
    )
    assert accepting.json()["session_token"]
    http.cookies.clear()
    # The token travels in the body, never in the URL (where logs and Referer headers keep it).
    link = await magic_link(http, url, "api@example.com", headers)
    in_url = await http.post(
        f"{url}/client/login/confirm?token={token_of(link)}", data={"token": token_of(link)}
    )
    assert_problem(in_url, 422)
    assert_problem(
        await http.post(
            f"{url}/client/login/confirm", content=b"token", headers={"Content-Type": "text/plain"}
        ),
        415,
    )
    assert_problem(await http.post(f"{url}/client/login/confirm", data={"other": "x"}), 422)
    assert_problem(await http.post(f"{url}/client/login/confirm", json={"token": ""}), 422)
    assert_problem(
        await http.post(
            f"{url}/client/login/confirm", content=b"{", headers={"Content-Type": "application/json"}
        ),
        400,
    )
    assert (await confirm(http, url, "client", token_of(link))).status_code == 200  # still unused


async def test_an_expired_link_or_session_is_refused(magic_gateway, http, make_org, stack):
    url = magic_gateway.url
    org = await make_org()
    headers = {"X-Test-Org": org.org_id}
    stale = token_of(await magic_link(http, url, "late@example.com", headers))
    session = await session_of(http, url, "client", await magic_link(http, url, "late@example.com", headers))
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE iam.portal_links SET expires_at = now() - interval '1 second' WHERE org_id = %s AND used_at IS NULL",
            (org.org_id,),
        )
        conn.execute(
            "UPDATE iam.portal_sessions SET expires_at = now() - interval '1 second' WHERE org_id = %s",
            (org.org_id,),
        )
    assert_problem(await confirm(http, url, "client", stale), 401, "invalid_portal_token")
    assert_problem(await http.get(url + BOOKINGS, headers=bearer(session)), 401, "invalid_portal_session")


async def test_tokens_are_stored_as_hashes_only(magic_gateway, http, make_org, stack):
    url = magic_gateway.url
    org = await make_org()
    link = await magic_link(http, url, "hash@example.com", {"X-Test-Org": org.org_id})
    session = await session_of(http, url, "client", link)
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        dump = "".join(
            str(row)
            for table in ("portal_links", "portal_sessions")
            for row in conn.execute(f"SELECT * FROM iam.{table} WHERE org_id = %s", (org.org_id,)).fetchall()
        )
        outbox = str(
            conn.execute("SELECT payload FROM iam.event_outbox WHERE org_id = %s", (org.org_id,)).fetchall()
        )
    assert "hash@example.com" in dump  # the rows are there: the subject is no secret
    for secret in (token_of(link), session, session.split(".")[2]):
        assert secret not in dump and secret not in outbox


# --- login CSRF --------------------------------------------------------------------------------


async def test_another_site_cannot_post_a_link_to_sign_a_visitor_in(magic_gateway, http, make_org):
    url = magic_gateway.url
    org = await make_org()
    token = token_of(await magic_link(http, url, "attacker@example.com", {"X-Test-Org": org.org_id}))
    for headers in (
        CROSS_SITE,
        {"Sec-Fetch-Site": "same-site", "Origin": "https://sub.evil.example"},
        {"Origin": "https://evil.example"},  # a browser without fetch metadata
        {"Origin": "null"},  # a sandboxed frame or a data: page
    ):
        refused = await confirm(http, url, "client", token, headers=headers)
        assert_problem(refused, 403, "cross_site_request")
        assert "set-cookie" not in refused.headers
    # Nothing was used up: the person's own browser (same origin) still signs in with it.
    same_host = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
    assert (await confirm(http, url, "client", token, headers=same_host)).status_code == 200


async def test_cookie_writes_and_logouts_from_another_site_are_refused(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    worker = await new_worker(http, url, owner, "Ada")
    job = await create_booking(http, url, owner, starts_at=slot(24))
    assert (await http.post(f"{url}/v1/admin/bookings/{job['id']}/confirm", headers=owner)).status_code == 200
    assign(stack, org.org_id, job, worker)
    session = await session_of(http, url, "worker", await worker_link(http, url, owner, worker))
    cookie = {"Cookie": f"worker_session={session}"}
    assert_problem(
        await http.post(f"{url}{JOBS}/{job['id']}/start", headers={**cookie, **CROSS_SITE}),
        403,
        "cross_site_request",
    )
    assert_problem(
        await http.post(f"{url}/worker/logout", headers={**cookie, **CROSS_SITE}), 403, "cross_site_request"
    )
    assert await status_with(http, url, JOBS, session) == 200  # still signed in, the job not started
    started = await http.post(f"{url}{JOBS}/{job['id']}/start", headers=cookie)
    assert started.status_code == 200, started.text


# --- ending sessions ---------------------------------------------------------------------------


async def test_logout_ends_the_session(magic_gateway, http, make_org):
    url = magic_gateway.url
    org = await make_org()
    headers = {"X-Test-Org": org.org_id}
    by_bearer = await session_of(http, url, "client", await magic_link(http, url, "bye@example.com", headers))
    by_cookie = await session_of(http, url, "client", await magic_link(http, url, "bye@example.com", headers))
    assert await status_with(http, url, BOOKINGS, by_bearer) == 200

    out = await http.post(f"{url}/client/logout", headers=bearer(by_bearer))
    assert out.status_code == 204, out.text
    assert 'client_session=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
    assert_problem(await http.get(url + BOOKINGS, headers=bearer(by_bearer)), 401, "invalid_portal_session")
    # The other session (another device) is untouched, and ends by its own cookie.
    assert await status_with(http, url, BOOKINGS, by_cookie) == 200
    assert (
        await http.post(f"{url}/client/logout", headers={"Cookie": f"client_session={by_cookie}"})
    ).status_code == 204
    assert_problem(await http.get(url + BOOKINGS, headers={"Cookie": f"client_session={by_cookie}"}), 401)
    assert_problem(await http.post(f"{url}/client/logout"), 401, "unauthenticated")


async def test_a_deactivated_workers_sessions_and_links_end(gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    worker = await new_worker(http, url, owner, "Leaving")
    phone = await session_of(http, url, "worker", await worker_link(http, url, owner, worker))
    # A second link (another device) ends nothing: both sessions work.
    tablet = await session_of(http, url, "worker", await worker_link(http, url, owner, worker))
    unused = await worker_link(http, url, owner, worker)
    assert (
        await status_with(http, url, JOBS, phone) == 200 and await status_with(http, url, JOBS, tablet) == 200
    )
    # Another worker of the org keeps their access.
    stays = await new_worker(http, url, owner, "Staying")
    staying = await session_of(http, url, "worker", await worker_link(http, url, owner, stays))

    patched = await http.patch(f"{url}/v1/admin/workers/{worker}", json={"active": False}, headers=owner)
    assert patched.status_code == 200, patched.text

    async def ended() -> bool:
        return (
            await status_with(http, url, JOBS, phone) == 401
            and await status_with(http, url, JOBS, tablet) == 401
        )

    await eventually(ended, timeout=10, message="the deactivated worker's sessions refused")
    assert_problem(await confirm(http, url, "worker", token_of(unused)), 401, "portal_link_revoked")
    assert_problem(await http.get(url + unused), 401, "portal_link_revoked")
    assert await status_with(http, url, JOBS, staying) == 200
    # Reactivating brings no old session back.
    await http.patch(f"{url}/v1/admin/workers/{worker}", json={"active": True}, headers=owner)
    assert await status_with(http, url, JOBS, phone) == 401


async def test_a_deleted_workers_session_ends(gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    worker = await new_worker(http, url, owner, "Gone")
    session = await session_of(http, url, "worker", await worker_link(http, url, owner, worker))
    assert (await http.delete(f"{url}/v1/admin/workers/{worker}", headers=owner)).status_code in (200, 204)

    async def ended() -> bool:
        return await status_with(http, url, JOBS, session) == 401

    await eventually(ended, timeout=10, message="the deleted worker's session refused")


# --- an admin ends one worker's portal access (a lost phone), the worker staying active ----------


def revoke_url(url: str, worker: str) -> str:
    return f"{url}/v1/admin/workers/{worker}/portal/revoke"


async def test_an_admin_ends_a_workers_portal_access_without_deactivating_them(gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    worker = await new_worker(http, url, owner, "Lost phone")
    phone = await session_of(http, url, "worker", await worker_link(http, url, owner, worker))
    tablet = await session_of(http, url, "worker", await worker_link(http, url, owner, worker))
    unused = await worker_link(http, url, owner, worker)  # issued before, not yet used
    stays = await new_worker(http, url, owner, "Keeps their phone")
    staying = await session_of(http, url, "worker", await worker_link(http, url, owner, stays))
    assert (
        await status_with(http, url, JOBS, phone) == 200 and await status_with(http, url, JOBS, tablet) == 200
    )

    revoked = await http.post(revoke_url(url, worker), headers=owner)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"revoked_sessions": 2, "revoked_links": 1}
    # At once (no event in between): the next portal request is refused as a signed-out session is.
    for session in (phone, tablet):
        assert_problem(await http.get(url + JOBS, headers=bearer(session)), 401, "invalid_portal_session")
        assert_problem(
            await http.get(url + JOBS, headers={"Cookie": f"worker_session={session}"}),
            401,
            "invalid_portal_session",
        )
    assert_problem(await confirm(http, url, "worker", token_of(unused)), 401, "portal_link_revoked")
    assert_problem(await http.get(url + unused), 401, "portal_link_revoked")
    assert await status_with(http, url, JOBS, staying) == 200  # another worker keeps theirs

    # The worker stays active: a new link signs them in again, and asking again ends only that.
    [listed] = [
        w
        for w in (await http.get(f"{url}/v1/admin/workers", headers=owner)).json()["workers"]
        if w["id"] == worker
    ]
    assert listed["active"] is True
    again = await session_of(http, url, "worker", await worker_link(http, url, owner, worker))
    assert await status_with(http, url, JOBS, again) == 200
    assert (await http.post(revoke_url(url, worker), headers=owner)).json() == {
        "revoked_sessions": 1,
        "revoked_links": 0,
    }
    assert await status_with(http, url, JOBS, again) == 401
    assert (await http.post(revoke_url(url, worker), headers=owner)).json() == {
        "revoked_sessions": 0,
        "revoked_links": 0,
    }

    # Audited as an admin write, by whom and on which worker.
    logs = await http.get(
        f"{url}/v1/admin/audit-logs", params={"action": "iam.worker_portal_access.revoke"}, headers=owner
    )
    assert logs.status_code == 200, logs.text
    entries = logs.json()
    assert len(entries) == 3 and {e["resource_type"] for e in entries} == {"worker"}
    assert {e["resource_id"] for e in entries} == {worker} and {e["role"] for e in entries} == {"OWNER"}
    assert entries[-1]["after"] == {"revoked_sessions": 2, "revoked_links": 1}


async def test_revoking_a_workers_portal_access_needs_dispatch_roles_and_their_own_org(
    gateway, http, make_org
):
    url = gateway.url
    org, other = await make_org(), await make_org()
    owner = await testkit.owner(http, url, org)
    worker = await new_worker(http, url, owner, "Targeted")
    session = await session_of(http, url, "worker", await worker_link(http, url, owner, worker))
    unused = await worker_link(http, url, owner, worker)

    for role in ("VIEWER", "FINANCE"):
        staff = await testkit.staff(http, url, owner, role)
        assert_problem(await http.post(revoke_url(url, worker), headers=staff), 403)
    assert_problem(await http.post(revoke_url(url, worker)), 401)
    # The worker's own portal session is no staff credential.
    assert_problem(await http.post(revoke_url(url, worker), headers=bearer(session)), 401)
    assert_problem(await http.post(revoke_url(url, "not-a-uuid"), headers=owner), 422)

    # Another org's admin with this worker's id: 404, word for word what booking's worker routes
    # answer for it, and an unknown id the same. Nothing of the worker's access ends.
    other_owner = await testkit.owner(http, url, other)
    patched = assert_problem(
        await http.patch(f"{url}/v1/admin/workers/{worker}", json={"name": "B"}, headers=other_owner), 404
    )
    for stranger in (worker, str(uuid.uuid4())):
        refused = assert_problem(await http.post(revoke_url(url, stranger), headers=other_owner), 404)
        assert {k: refused[k] for k in ("type", "title", "status", "detail")} == {
            k: patched[k] for k in ("type", "title", "status", "detail")
        }
    assert await status_with(http, url, JOBS, session) == 200

    # A dispatcher may, as they may issue the link; the unused link is revoked with the session.
    dispatcher = await testkit.staff(http, url, owner, "DISPATCHER")
    revoked = await http.post(revoke_url(url, worker), headers=dispatcher)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"revoked_sessions": 1, "revoked_links": 1}
    assert_problem(await http.get(url + JOBS, headers=bearer(session)), 401, "invalid_portal_session")
    assert_problem(await confirm(http, url, "worker", token_of(unused)), 401, "portal_link_revoked")

    # An inactive worker can still be revoked (their access may still be ending): not 409.
    assert (
        await http.patch(f"{url}/v1/admin/workers/{worker}", json={"active": False}, headers=owner)
    ).status_code == 200
    assert (await http.post(revoke_url(url, worker), headers=owner)).status_code == 200


# --- tokens stay out of logs -------------------------------------------------------------------


async def test_no_token_reaches_the_gateways_or_iams_log(magic, http, make_org):
    url = magic.gateway.url
    org = await make_org()
    link = await magic_link(http, url, "quiet@example.com", {"X-Test-Org": org.org_id})
    await http.get(url + link)  # the page
    await http.get(f"{url}/client/login/callback", params={"token": "x" * 40 + "-invalid-token-in-a-query"})
    signed_in = await confirm(http, url, "client", token_of(link), headers={"Accept": "application/json"})
    session = signed_in.json()["session_token"]
    http.cookies.clear()
    await http.get(url + BOOKINGS, headers=bearer(session))
    await http.post(f"{url}/client/logout", headers=bearer(session))
    await http.get(url + BOOKINGS, headers=bearer(session))  # refused, and logged as such

    def logged() -> bool:
        return '"route": "/client/logout"' in magic.gateway.log_path.read_text()

    await eventually(logged, timeout=5, message="the gateway's access lines")
    gateway_log = magic.gateway.log_path.read_text()
    iam_log = magic.iam.log_path.read_text()
    assert (
        '"route": "/client/login/callback"' in gateway_log
        and '"route": "/client/login/confirm"' in gateway_log
    )
    for secret in (token_of(link), session, session.split(".")[2], "-invalid-token-in-a-query"):
        assert secret not in gateway_log, "a token in the gateway's log"
        assert secret not in iam_log, "a token in IAM's log"
    assert "?token" not in gateway_log and "token=" not in gateway_log
