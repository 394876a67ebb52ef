"""A local QuickBooks Online for the integrations tests and `make dev`: the subset of the Accounting REST
API v3 that qbo-sync uses, behind the OAuth routes of tools/fake_oauth.py (Intuit's authorization
server: authorize redirects back with `realmId`). Every API call needs a live bearer token of a grant
for the path's realm.

    FakeQuickBooks(log_dir).start()     # a process on a free port; .base_url, .stop(), .kill()
    python -m tools.fake_quickbooks --port N

API (`/v3/company/{realmId}/...`, JSON, `minorversion` accepted and ignored; errors are Intuit's
`{"Fault": {"Error": [{"Message", "Detail", "code"}], "type"}, "time"}`):
- `GET companyinfo/{realmId}`: `{"CompanyInfo": {"CompanyName", "Country": "CA", ...}}`.
- `GET|POST query?query=...` (POST: the statement as the text/plain body): `SELECT * | COUNT(*) FROM
  <Customer|Invoice|Payment|TaxCode|TaxRate> [WHERE <field> <op> <value> [AND ...]]
  [ORDERBY <field> [ASC|DESC]] [STARTPOSITION n] [MAXRESULTS n]` with ops `= < > <= >= IN LIKE`,
  dotted fields (`MetaData.LastUpdatedTime`), a reference or email field compared by its value or
  address (`CustomerRef = '3'`, `PrimaryEmailAddr = 'a@b.c'`), times compared as instants.
  Answers `{"QueryResponse": {"<Entity>": [...], "startPosition", "maxResults"}}` (`{}` when none).
- `POST customer`, `POST invoice`, `POST payment`: create (`?requestid=` makes a retried create answer
  the first result: nothing is created twice); an `Id` in the body is an update, which needs the
  current `SyncToken` (else 400 code 5010 "Stale Object Error") and may be `"sparse": true`.
  `POST invoice?operation=void` with Id and SyncToken voids (amounts 0, "Voided" note).
  `GET customer|invoice|payment/{id}`.
- Rules the sync must meet: a customer's DisplayName is unique (6240); an invoice names an existing
  customer, each sales line a known tax code (6000), Amount = Qty x UnitPrice (6070), a DocNumber of at
  most 21 characters used once (6140); `TxnTaxDetail.TotalTax`, when given, overrides the tax the
  codes would compute (the sync sends its invoice's snapshot); a payment's lines link to invoices of its
  customer and reduce their Balance.
- The company's tax lists are seeded as a Canadian company's: GST 5 %, HST ON 13 %, GST/QST QC
  (5 % + 9.975 %), Exempt 0 %, Zero-rated 0 %.

Control routes for tests (JSON):
- `POST /_control/companies {"name"?}`: a new company (fresh realm id) that the next consents pick;
  answers `{"realm_id", "name"}`. One company exists from the start.
- `POST /_control/faults {"status": 429|5xx, "count": n, "retry_after"?: s, "after"?: bool,
  "method"?: "POST", "path"?: "/invoice"}`: the next n API calls (those of that method whose path
  ends so, when given) answer `status` (429 with `Retry-After`); with `"after": true` the call is
  carried out first and its answer lost (a timeout after the server did the work).
- `POST /_control/delay {"seconds": s, "count": n, "method"?, "path"?}`: the next n (matching) API
  calls are answered after s seconds, their work done first: for killing a client mid-call.
- `POST /_control/expire-tokens`, `POST /_control/revoke-grants`: every access token expired / every
  grant revoked.
- `POST /_control/payments {"realm_id", "invoice_id" | "lines": [{"invoice_id", "amount"}],
  "amount"?, "txn_date"?, "count"?}`: the accountant records a payment (amount defaults to the
  balance; `count` records that many alike); answers `{"Payment": first, "Payments": all}`.
- `POST /_control/payments/{id} {"realm_id", "amount"}`: the accountant edits a payment's amount.
- `GET /_control/invoices|customers|payments?realm_id=`: what the company holds.
- `GET /_control/requests`: the API calls seen (method, path, query, status).
- `POST /_control/reset`: every company's data, faults and the request log forgotten (the OAuth grants
  stay: `/_control/oauth/reset` forgets those).
- `GET /_control/healthz`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

from aiohttp import web

from tools.fake_oauth import FakeServer, OAuthServer

DEFAULT_REALM = "9130357000000001"
DEFAULT_COMPANY = "Sparkle Books Inc."
# Intuit answers in the company's zone; the sync must read offsets, so the fake keeps Pacific time.
COMPANY_TZ = timezone(timedelta(hours=-8))
MAX_RESULTS_LIMIT = 1000
DEFAULT_MAX_RESULTS = 100
ENTITIES = ("Customer", "Invoice", "Payment", "TaxCode", "TaxRate")
CENT = Decimal("0.01")

log = logging.getLogger("fake_quickbooks")


class Fault(Exception):
    """An Intuit error answer."""

    def __init__(self, status: int, kind: str, code: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.message, self.detail = status, kind, code, message, detail

    def response(self) -> web.Response:
        body = {
            "Fault": {
                "Error": [
                    {"Message": self.message, "Detail": self.detail or self.message, "code": self.code}
                ],
                "type": self.kind,
            },
            "time": _now_text(),
        }
        return web.json_response(body, status=self.status)


def validation(code: str, message: str, detail: str = "") -> Fault:
    return Fault(400, "ValidationFault", code, message, detail)


def _now() -> datetime:
    return datetime.now(COMPANY_TZ)


def _now_text() -> str:
    return _now().isoformat(timespec="milliseconds")


def _stamp(at: datetime) -> str:
    return at.astimezone(COMPANY_TZ).isoformat(timespec="seconds")


def money(value: Any) -> Decimal:
    try:
        return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)
    except ArithmeticError:
        raise validation(
            "2020", "Required param missing, need to supply the required value", str(value)
        ) from None


def _num(value: Decimal) -> float | int:
    as_float = float(value)
    return int(as_float) if as_float.is_integer() else as_float


@dataclass
class Company:
    realm_id: str
    name: str
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # requestid -> the first successful answer (status, body)
    replies: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for entity in ENTITIES:
            self.data.setdefault(entity, {})
        self._seed_taxes()

    def next_id(self) -> str:
        return str(next(self.ids))

    def _seed_taxes(self) -> None:
        created = _stamp(datetime(2024, 1, 1, tzinfo=UTC))
        meta = {"CreateTime": created, "LastUpdatedTime": created}
        rates = [("GST", "5"), ("HST ON", "13"), ("QST", "9.975"), ("Exempt", "0"), ("Zero-rated", "0")]
        rate_ids: dict[str, str] = {}
        for name, value in rates:
            rate_id = self.next_id()
            rate_ids[name] = rate_id
            self.data["TaxRate"][rate_id] = {
                "Id": rate_id,
                "Name": name,
                "RateValue": _num(Decimal(value)),
                "Active": True,
                "SpecialTaxType": "ZERO_RATE" if value == "0" else "NONE",
                "DisplayType": "ReadOnly",
                "AgencyRef": {"value": "1"},
                "SyncToken": "0",
                "MetaData": dict(meta),
            }
        codes = [
            ("GST", ["GST"]),
            ("HST ON", ["HST ON"]),
            ("GST/QST QC", ["GST", "QST"]),
            ("Exempt", ["Exempt"]),
            ("Zero-rated", ["Zero-rated"]),
        ]
        for name, members in codes:
            code_id = self.next_id()
            self.data["TaxCode"][code_id] = {
                "Id": code_id,
                "Name": name,
                "Description": name,
                "Active": True,
                "Taxable": True,
                "TaxGroup": True,
                "SyncToken": "0",
                "SalesTaxRateList": {
                    "TaxRateDetail": [
                        {
                            "TaxRateRef": {"value": rate_ids[m], "name": m},
                            "TaxTypeApplicable": "TaxOnAmount",
                            "TaxOrder": 0,
                        }
                        for m in members
                    ]
                },
                "PurchaseTaxRateList": {"TaxRateDetail": []},
                "MetaData": dict(meta),
            }

    def code_rate(self, code_id: str) -> Decimal:
        code = self.data["TaxCode"].get(code_id)
        if code is None or not code.get("Active", True):
            raise validation(
                "6000",
                "A business validation error has occurred while processing your request",
                f"Business Validation Error: tax code {code_id!r} does not exist; make sure all your"
                " transactions have a GST/HST rate before you save",
            )
        total = Decimal(0)
        for detail in code["SalesTaxRateList"]["TaxRateDetail"]:
            total += Decimal(str(self.data["TaxRate"][detail["TaxRateRef"]["value"]]["RateValue"]))
        return total


@dataclass
class Faults:
    status: int = 0
    count: int = 0
    retry_after: float = 1
    after: bool = False
    delay_seconds: float = 0
    delay_count: int = 0
    # Only calls whose method and path end match (e.g. "POST", "/invoice"); "" matches every call.
    method: str = ""
    path_suffix: str = ""
    delay_method: str = ""
    delay_path_suffix: str = ""

    def hits(self, request: web.Request) -> bool:
        return (not self.method or request.method == self.method) and request.path.endswith(self.path_suffix)

    def delays(self, request: web.Request) -> bool:
        return (not self.delay_method or request.method == self.delay_method) and request.path.endswith(
            self.delay_path_suffix
        )


# --- the query language ----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<op><=|>=|!=|=|<|>)|(?P<paren>[(),])"
    r"|(?P<star>\*)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*(?:\(\*\))?)|(?P<number>-?\d+(?:\.\d+)?))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _parse_error(f"unexpected text at {text[position : position + 20]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "string":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        found.append((kind, value))
        position = match.end()
    return found


def _parse_error(detail: str) -> Fault:
    return Fault(400, "ValidationFault", "4000", "Error parsing query", f"QueryParserError: {detail}")


@dataclass
class Query:
    entity: str
    count: bool
    conditions: list[tuple[str, str, Any]]
    order: tuple[str, bool] | None
    start: int
    max_results: int


def parse_query(text: str) -> Query:
    tokens = _tokens(text)
    pos = 0

    def peek() -> tuple[str, str]:
        return tokens[pos] if pos < len(tokens) else ("end", "")

    def take(kind: str | None = None, word: str | None = None) -> str:
        nonlocal pos
        got_kind, value = peek()
        if (kind and got_kind != kind) or (word and value.upper() != word):
            raise _parse_error(f"expected {word or kind}, found {value or 'the end'!r}")
        pos += 1
        return value

    take("word", "SELECT")
    count = False
    if peek()[0] == "star":
        take("star")
    elif peek()[1].upper() == "COUNT(*)":
        take("word")
        count = True
    else:
        raise _parse_error("only SELECT * and SELECT COUNT(*) are supported here")
    take("word", "FROM")
    name = take("word")
    entity = next((e for e in ENTITIES if e.lower() == name.lower()), None)
    if entity is None:
        raise _parse_error(f"unknown entity {name!r}")
    conditions: list[tuple[str, str, Any]] = []
    if peek()[1].upper() == "WHERE":
        take("word")
        while True:
            field_name = take("word")
            kind, op = peek()
            if kind == "op":
                take("op")
                value: Any = _literal(take())
            elif op.upper() in ("IN", "LIKE"):
                take("word")
                op = op.upper()
                if op == "IN":
                    take("paren")
                    value = []
                    while True:
                        value.append(_literal(take()))
                        if take("paren") == ")":
                            break
                else:
                    value = take("string")
            else:
                raise _parse_error(f"expected an operator after {field_name}")
            conditions.append((field_name, op, value))
            if peek()[1].upper() != "AND":
                break
            take("word")
    order = None
    if peek()[1].upper() in ("ORDERBY", "ORDER"):
        if take("word").upper() == "ORDER":
            take("word", "BY")
        order_field = take("word")
        descending = False
        if peek()[1].upper() in ("ASC", "DESC"):
            descending = take("word").upper() == "DESC"
        order = (order_field, descending)
    start, max_results = 1, DEFAULT_MAX_RESULTS
    while peek()[0] != "end":
        keyword = take("word").upper()
        number = int(take("number"))
        if keyword == "STARTPOSITION":
            start = number
        elif keyword == "MAXRESULTS":
            max_results = number
        else:
            raise _parse_error(f"unexpected {keyword}")
    if start < 1 or not 1 <= max_results <= MAX_RESULTS_LIMIT:
        raise _parse_error(f"STARTPOSITION must be 1 or more and MAXRESULTS 1 to {MAX_RESULTS_LIMIT}")
    return Query(entity, count, conditions, order, start, max_results)


def _literal(token: str) -> Any:
    if token.lower() in ("true", "false"):
        return token.lower() == "true"
    return token


def _field(entity: dict[str, Any], path: str) -> Any:
    value: Any = entity
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = next((v for k, v in value.items() if k.lower() == part.lower()), None)
    if isinstance(value, dict):
        value = value.get("value", value.get("Address"))
    return value


def _comparable(value: Any, path: str) -> Any:
    if value is None:
        return None
    if path.lower().endswith("time"):
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise _parse_error(f"{value!r} is not a date-time") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=COMPANY_TZ)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    text = str(value)
    try:
        return Decimal(text) if re.fullmatch(r"-?\d+(\.\d+)?", text) else text.lower()
    except ArithmeticError:
        return text.lower()


def _matches(entity: dict[str, Any], conditions: list[tuple[str, str, Any]]) -> bool:
    for path, op, wanted in conditions:
        have = _comparable(_field(entity, path), path)
        if op == "IN":
            if have not in [_comparable(w, path) for w in wanted]:
                return False
            continue
        if op == "LIKE":
            pattern = "^" + ".*".join(re.escape(p) for p in str(wanted).lower().split("%")) + "$"
            if have is None or not re.match(pattern, str(have)):
                return False
            continue
        want = _comparable(wanted, path)
        if have is None:
            return False
        try:
            ok = {
                "=": have == want,
                "!=": have != want,
                "<": have < want,
                ">": have > want,
                "<=": have <= want,
                ">=": have >= want,
            }[op]
        except TypeError:
            raise _parse_error(f"cannot compare {path} with {wanted!r}") from None
        if not ok:
            return False
    return True


# --- the server ------------------------------------------------------------------------------------


@dataclass
class FakeQuickBooksServer:
    oauth: OAuthServer
    companies: dict[str, Company] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        realm = self.oauth.realm_id or DEFAULT_REALM
        self.oauth.realm_id = realm
        self.companies.setdefault(realm, Company(realm, DEFAULT_COMPANY))

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._api_middleware])
        self.oauth.add_routes(app)
        base = "/v3/company/{realm}"
        app.router.add_get(base + "/companyinfo/{id}", self.company_info)
        app.router.add_get(base + "/query", self.query)
        app.router.add_post(base + "/query", self.query)
        app.router.add_post(base + "/customer", self.post_customer)
        app.router.add_post(base + "/invoice", self.post_invoice)
        app.router.add_post(base + "/payment", self.post_payment)
        app.router.add_get(base + "/{entity:customer|invoice|payment}/{id}", self.read)
        app.router.add_get("/_control/healthz", self._healthz)
        app.router.add_post("/_control/companies", self._c_company)
        app.router.add_post("/_control/faults", self._c_faults)
        app.router.add_post("/_control/delay", self._c_delay)
        app.router.add_post("/_control/expire-tokens", self._c_expire)
        app.router.add_post("/_control/revoke-grants", self._c_revoke)
        app.router.add_post("/_control/payments", self._c_payment)
        app.router.add_post("/_control/payments/{id}", self._c_edit_payment)
        app.router.add_get("/_control/{entity:invoices|customers|payments}", self._c_list)
        app.router.add_get("/_control/requests", self._c_requests)
        app.router.add_post("/_control/reset", self._c_reset)
        return app

    # --- middleware: auth, faults, request log ----------------------------------------------------

    @web.middleware
    async def _api_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/v3/company/"):
            return await handler(request)  # type: ignore[no-any-return]
        entry: dict[str, Any] = {"method": request.method, "path": request.path, "query": dict(request.query)}
        self.requests.append(entry)
        response = await self._api(request, handler)
        entry["status"] = response.status
        return response

    async def _api(self, request: web.Request, handler: Any) -> web.StreamResponse:
        faults = self.faults
        fault: web.Response | None = None
        if faults.count > 0 and faults.hits(request):
            faults.count -= 1
            fault = self._fault_response(faults)
            if not faults.after:
                return fault
        token = self.oauth.bearer(request)
        if token is None:
            return Fault(
                401,
                "AUTHENTICATION",
                "3200",
                "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "Token expired or invalid",
            ).response()
        realm = request.match_info.get("realm", "")
        if (token.grant.realm_id and token.grant.realm_id != realm) or realm not in self.companies:
            return Fault(
                403,
                "AuthorizationFault",
                "003100",
                "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                "the token is not for this company",
            ).response()
        try:
            response: web.StreamResponse = await handler(request)
        except Fault as problem:
            response = problem.response()
        if faults.delay_count > 0 and faults.delays(request):
            faults.delay_count -= 1
            await asyncio.sleep(faults.delay_seconds)
        return fault if fault is not None else response

    def _fault_response(self, faults: Faults) -> web.Response:
        if faults.status == 429:
            return web.json_response(
                {
                    "Fault": {
                        "Error": [
                            {
                                "Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                                "Detail": "The request limit was reached.",
                                "code": "003001",
                            }
                        ],
                        "type": "SERVICE",
                    },
                    "time": _now_text(),
                },
                status=429,
                headers={"Retry-After": f"{faults.retry_after:g}"},
            )
        return web.json_response(
            {
                "Fault": {
                    "Error": [
                        {"Message": "An application error has occurred", "Detail": "", "code": "10000"}
                    ],
                    "type": "SystemFault",
                },
                "time": _now_text(),
            },
            status=faults.status,
        )

    def company(self, request: web.Request) -> Company:
        return self.companies[request.match_info["realm"]]

    # --- API ---------------------------------------------------------------------------------------

    async def company_info(self, request: web.Request) -> web.Response:
        company = self.company(request)
        if request.match_info["id"] != company.realm_id:
            raise Fault(400, "ValidationFault", "610", "Object Not Found", "Object Not Found : CompanyInfo")
        return _answer(
            "CompanyInfo",
            {
                "Id": "1",
                "CompanyName": company.name,
                "LegalName": company.name,
                "Country": "CA",
                "CompanyAddr": {"City": "Toronto", "CountrySubDivisionCode": "ON", "Country": "CA"},
                "SyncToken": "0",
                "MetaData": {"CreateTime": _stamp(datetime(2024, 1, 1, tzinfo=UTC))},
            },
        )

    async def query(self, request: web.Request) -> web.Response:
        text = request.query.get("query", "")
        if request.method == "POST" and not text:
            text = (await request.text()).strip()
        parsed = parse_query(text)
        company = self.company(request)
        rows = [e for e in company.data[parsed.entity].values() if _matches(e, parsed.conditions)]
        if parsed.count:
            return web.json_response({"QueryResponse": {"totalCount": len(rows)}, "time": _now_text()})
        if parsed.order is not None:
            path, descending = parsed.order
            rows.sort(key=lambda e: (_comparable(_field(e, path), path) is None, _sort_key(e, path)))
            if descending:
                rows.reverse()
        else:
            rows.sort(key=lambda e: int(e["Id"]) if str(e["Id"]).isdigit() else 0)
        page = rows[parsed.start - 1 : parsed.start - 1 + parsed.max_results]
        body: dict[str, Any] = {}
        if page:
            body = {parsed.entity: page, "startPosition": parsed.start, "maxResults": len(page)}
        return web.json_response({"QueryResponse": body, "time": _now_text()})

    async def read(self, request: web.Request) -> web.Response:
        entity = request.match_info["entity"].capitalize()
        found = self.company(request).data[entity].get(request.match_info["id"])
        if found is None:
            raise Fault(400, "ValidationFault", "610", "Object Not Found", f"Object Not Found : {entity}")
        return _answer(entity, found)

    async def post_customer(self, request: web.Request) -> web.Response:
        return await self._write(request, "Customer", self._customer)

    async def post_invoice(self, request: web.Request) -> web.Response:
        if request.query.get("operation") == "void":
            return await self._write(request, "Invoice", self._void)
        return await self._write(request, "Invoice", self._invoice)

    async def post_payment(self, request: web.Request) -> web.Response:
        return await self._write(request, "Payment", self._payment)

    async def _write(self, request: web.Request, entity: str, make: Any) -> web.Response:
        company = self.company(request)
        request_id = request.query.get("requestid", "")
        if request_id and request_id in company.replies:
            status, reply = company.replies[request_id]
            return web.json_response(reply, status=status)
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            raise Fault(400, "ValidationFault", "2500", "Invalid Request", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Fault(400, "ValidationFault", "2500", "Invalid Request", "a JSON object is expected")
        saved = make(company, body)
        reply = {entity: saved, "time": _now_text()}
        if request_id:
            company.replies[request_id] = (200, copy.deepcopy(reply))
        return web.json_response(reply)

    def _updating(self, company: Company, entity: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The stored object an update names (its SyncToken checked), or None for a create."""
        if "Id" not in body:
            return None
        stored = company.data[entity].get(str(body["Id"]))
        if stored is None:
            raise Fault(400, "ValidationFault", "610", "Object Not Found", f"Object Not Found : {entity}")
        if str(body.get("SyncToken", "")) != stored["SyncToken"]:
            raise validation(
                "5010",
                "Stale Object Error",
                f"Stale Object Error : You and {company.name} were working on this at the same time."
                f" {company.name} finished before you did, so your work was not saved.",
            )
        return stored

    @staticmethod
    def _touch(stored: dict[str, Any], created: bool) -> None:
        now = _stamp(_now())
        if created:
            stored["SyncToken"] = "0"
            stored["MetaData"] = {"CreateTime": now, "LastUpdatedTime": now}
        else:
            stored["SyncToken"] = str(int(stored["SyncToken"]) + 1)
            stored["MetaData"]["LastUpdatedTime"] = now

    def _customer(self, company: Company, body: dict[str, Any]) -> dict[str, Any]:
        stored = self._updating(company, "Customer", body)
        merged = {**(stored or {}), **body} if (stored is None or body.get("sparse")) else dict(body)
        name = str(merged.get("DisplayName") or "").strip()
        if not name:
            raise validation(
                "2020", "Required param missing, need to supply the required value", "DisplayName"
            )
        for other in company.data["Customer"].values():
            if other["DisplayName"].lower() == name.lower() and other["Id"] != merged.get("Id"):
                raise validation(
                    "6240",
                    "Duplicate Name Exists Error",
                    f"The name supplied already exists. : Id={other['Id']}",
                )
        merged.pop("sparse", None)
        merged["DisplayName"] = name
        merged.setdefault("Active", True)
        merged.setdefault("Balance", 0)
        if stored is None:
            merged["Id"] = company.next_id()
            self._touch(merged, created=True)
        else:
            merged["SyncToken"] = stored["SyncToken"]
            merged["MetaData"] = stored["MetaData"]
            self._touch(merged, created=False)
        company.data["Customer"][merged["Id"]] = merged
        return merged

    def _invoice(self, company: Company, body: dict[str, Any]) -> dict[str, Any]:
        stored = self._updating(company, "Invoice", body)
        if stored is not None and stored.get("PrivateNote", "").startswith("Voided"):
            raise validation("6000", "A business validation error has occurred", "the invoice is void")
        merged = {**stored, **body} if (stored is not None and body.get("sparse")) else dict(body)
        merged.pop("sparse", None)
        customer_id = str((merged.get("CustomerRef") or {}).get("value", ""))
        if customer_id not in company.data["Customer"]:
            raise validation(
                "2500", "Invalid Reference Id", f"Invalid Reference Id : Customer {customer_id!r}"
            )
        lines = merged.get("Line")
        if not isinstance(lines, list) or not lines:
            raise validation("2020", "Required param missing, need to supply the required value", "Line")
        subtotal, computed_tax, kept = Decimal(0), Decimal(0), []
        for number, line in enumerate(x for x in lines if x.get("DetailType") == "SalesItemLineDetail"):
            detail = line.get("SalesItemLineDetail") or {}
            amount = money(line.get("Amount"))
            if "Qty" in detail and "UnitPrice" in detail:
                expected = money(Decimal(str(detail["Qty"])) * Decimal(str(detail["UnitPrice"])))
                if abs(expected - amount) > CENT:
                    raise validation(
                        "6070",
                        "Amount is not equal to UnitPrice * Qty",
                        f"line {number + 1}: {amount} != {expected}",
                    )
            code = str((detail.get("TaxCodeRef") or {}).get("value", ""))
            rate = company.code_rate(code)
            computed_tax += amount * rate / 100
            subtotal += amount
            kept.append({**line, "Id": str(number + 1), "LineNum": number + 1, "Amount": _num(amount)})
        if not kept:
            raise validation("2020", "Required param missing, need to supply the required value", "Line")
        doc = str(merged.get("DocNumber") or "")
        if len(doc) > 21:
            raise validation(
                "6000", "A business validation error has occurred", "DocNumber: at most 21 characters"
            )
        if not doc:
            doc = str(1000 + len(company.data["Invoice"]) + 1)
        for other in company.data["Invoice"].values():
            if other["DocNumber"] == doc and other["Id"] != merged.get("Id"):
                raise validation(
                    "6140", "Duplicate Document Number Error", f"Duplicate Document Number Error : {doc}"
                )
        if merged.get("GlobalTaxCalculation", "TaxExcluded") not in ("TaxExcluded", "NotApplicable"):
            raise validation(
                "6000", "A business validation error has occurred", "only TaxExcluded is supported"
            )
        tax_detail = dict(merged.get("TxnTaxDetail") or {})
        tax = money(tax_detail["TotalTax"]) if "TotalTax" in tax_detail else money(computed_tax)
        total = subtotal + tax
        paid = sum(
            (money(p_amount) for p_amount in self._applied(company, merged.get("Id"))),
            Decimal(0),
        )
        merged.update(
            {
                "Line": [
                    *kept,
                    {"DetailType": "SubTotalLineDetail", "Amount": _num(subtotal), "SubTotalLineDetail": {}},
                ],
                "DocNumber": doc,
                "TxnTaxDetail": {**tax_detail, "TotalTax": _num(tax)},
                "TotalAmt": _num(total),
                "Balance": _num(max(total - paid, Decimal(0))),
                "CurrencyRef": merged.get("CurrencyRef") or {"value": "CAD", "name": "Canadian Dollar"},
                "GlobalTaxCalculation": merged.get("GlobalTaxCalculation", "TaxExcluded"),
                "TxnDate": merged.get("TxnDate") or _now().date().isoformat(),
                "domain": "QBO",
            }
        )
        if stored is None:
            merged["Id"] = company.next_id()
            self._touch(merged, created=True)
        else:
            merged["SyncToken"], merged["MetaData"] = stored["SyncToken"], stored["MetaData"]
            self._touch(merged, created=False)
        company.data["Invoice"][merged["Id"]] = merged
        return merged

    @staticmethod
    def _applied(company: Company, invoice_id: Any) -> list[Any]:
        if invoice_id is None:
            return []
        return [
            line["Amount"]
            for payment in company.data["Payment"].values()
            for line in payment.get("Line", [])
            for linked in line.get("LinkedTxn", [])
            if linked.get("TxnType") == "Invoice" and linked.get("TxnId") == str(invoice_id)
        ]

    def _void(self, company: Company, body: dict[str, Any]) -> dict[str, Any]:
        stored = self._updating(company, "Invoice", body)
        if stored is None:
            raise validation("2020", "Required param missing, need to supply the required value", "Id")
        if self._applied(company, stored["Id"]):
            raise validation("6000", "A business validation error has occurred", "the invoice has payments")
        for line in stored["Line"]:
            line["Amount"] = 0
        stored["TotalAmt"], stored["Balance"] = 0, 0
        stored["TxnTaxDetail"] = {"TotalTax": 0}
        stored["PrivateNote"] = "Voided"
        self._touch(stored, created=False)
        return stored

    def _payment(self, company: Company, body: dict[str, Any]) -> dict[str, Any]:
        if "Id" in body:
            raise validation(
                "6000", "A business validation error has occurred", "payment updates: use the control"
            )
        customer_id = str((body.get("CustomerRef") or {}).get("value", ""))
        if customer_id not in company.data["Customer"]:
            raise validation(
                "2500", "Invalid Reference Id", f"Invalid Reference Id : Customer {customer_id!r}"
            )
        total = money(body.get("TotalAmt"))
        lines = body.get("Line") or []
        applied = Decimal(0)
        for line in lines:
            for linked in line.get("LinkedTxn", []):
                invoice = company.data["Invoice"].get(str(linked.get("TxnId")))
                if linked.get("TxnType") != "Invoice" or invoice is None:
                    raise validation("2500", "Invalid Reference Id", f"Invalid Reference Id : {linked}")
                if invoice["CustomerRef"]["value"] != customer_id:
                    raise validation(
                        "6000", "A business validation error has occurred", "another customer's invoice"
                    )
            applied += money(line.get("Amount"))
        if applied > total:
            raise validation(
                "6000", "A business validation error has occurred", "lines add up to more than TotalAmt"
            )
        payment = {
            **body,
            "Id": company.next_id(),
            "TotalAmt": _num(total),
            "UnappliedAmt": _num(total - applied),
            "Line": [{**line, "Amount": _num(money(line.get("Amount")))} for line in lines],
            "TxnDate": body.get("TxnDate") or _now().date().isoformat(),
            "CurrencyRef": body.get("CurrencyRef") or {"value": "CAD", "name": "Canadian Dollar"},
            "domain": "QBO",
        }
        self._touch(payment, created=True)
        company.data["Payment"][payment["Id"]] = payment
        self._rebalance(company)
        return payment

    def _rebalance(self, company: Company) -> None:
        for invoice in company.data["Invoice"].values():
            paid = sum((money(a) for a in self._applied(company, invoice["Id"])), Decimal(0))
            balance = _num(max(money(invoice["TotalAmt"]) - paid, Decimal(0)))
            if balance != invoice["Balance"]:
                invoice["Balance"] = balance
                self._touch(invoice, created=False)

    # --- control -----------------------------------------------------------------------------------

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _c_company(self, request: web.Request) -> web.Response:
        body = await _control_json(request)
        realm = str(body.get("realm_id") or f"91303570{secrets.randbelow(10**8):08d}")
        name = str(body.get("name") or f"Company {realm[-4:]}")
        self.companies[realm] = Company(realm, name)
        self.oauth.realm_id = realm
        return web.json_response({"realm_id": realm, "name": name})

    async def _c_faults(self, request: web.Request) -> web.Response:
        body = await _control_json(request)
        self.faults.status = int(body.get("status", 503))
        self.faults.count = int(body.get("count", 1))
        self.faults.retry_after = float(body.get("retry_after", 1))
        self.faults.after = bool(body.get("after", False))
        self.faults.method = str(body.get("method", "")).upper()
        self.faults.path_suffix = str(body.get("path", ""))
        return web.json_response({"count": self.faults.count})

    async def _c_delay(self, request: web.Request) -> web.Response:
        body = await _control_json(request)
        self.faults.delay_seconds = float(body.get("seconds", 5))
        self.faults.delay_count = int(body.get("count", 1))
        self.faults.delay_method = str(body.get("method", "")).upper()
        self.faults.delay_path_suffix = str(body.get("path", ""))
        return web.json_response({"count": self.faults.delay_count})

    async def _c_expire(self, _: web.Request) -> web.Response:
        return web.json_response({"expired": self.oauth.expire_access_tokens()})

    async def _c_revoke(self, _: web.Request) -> web.Response:
        return web.json_response({"revoked": self.oauth.revoke_all()})

    def _control_company(self, body: dict[str, Any] | Any) -> Company:
        realm = str(body.get("realm_id") or self.oauth.realm_id or DEFAULT_REALM)
        if realm not in self.companies:
            raise web.HTTPNotFound(text=f"no company {realm}")
        return self.companies[realm]

    async def _c_payment(self, request: web.Request) -> web.Response:
        body = await _control_json(request)
        company = self._control_company(body)
        wanted = body.get("lines") or [{"invoice_id": body.get("invoice_id"), "amount": body.get("amount")}]
        lines, customer_id = [], None
        for line in wanted:
            invoice = company.data["Invoice"].get(str(line.get("invoice_id")))
            if invoice is None:
                raise web.HTTPNotFound(text=f"no invoice {line.get('invoice_id')}")
            customer_id = invoice["CustomerRef"]["value"]
            amount = money(line["amount"]) if line.get("amount") is not None else money(invoice["Balance"])
            lines.append(
                {"Amount": _num(amount), "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}
            )
        total = sum((money(line["Amount"]) for line in lines), Decimal(0))
        made = [
            self._payment(
                company,
                {
                    "CustomerRef": {"value": customer_id},
                    "TotalAmt": _num(total),
                    "Line": copy.deepcopy(lines),
                    "TxnDate": body.get("txn_date") or _now().date().isoformat(),
                    "PrivateNote": "recorded by the accountant",
                },
            )
            for _ in range(max(1, int(body.get("count", 1))))
        ]
        return web.json_response({"Payment": made[0], "Payments": made})

    async def _c_edit_payment(self, request: web.Request) -> web.Response:
        body = await _control_json(request)
        company = self._control_company(body)
        payment = company.data["Payment"].get(request.match_info["id"])
        if payment is None:
            raise web.HTTPNotFound(text="no such payment")
        amount = money(body["amount"])
        payment["Line"][0]["Amount"] = _num(amount)
        payment["TotalAmt"] = _num(sum((money(line["Amount"]) for line in payment["Line"]), Decimal(0)))
        self._touch(payment, created=False)
        self._rebalance(company)
        return web.json_response({"Payment": payment})

    async def _c_list(self, request: web.Request) -> web.Response:
        company = self._control_company(request.query)
        entity = {"invoices": "Invoice", "customers": "Customer", "payments": "Payment"}[
            request.match_info["entity"]
        ]
        rows = sorted(company.data[entity].values(), key=lambda e: int(e["Id"]))
        return web.json_response({"realm_id": company.realm_id, entity: rows})

    async def _c_requests(self, _: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests})

    async def _c_reset(self, _: web.Request) -> web.Response:
        for realm, company in list(self.companies.items()):
            self.companies[realm] = Company(realm, company.name)
        self.faults = Faults()
        self.requests.clear()
        return web.json_response({})


def _sort_key(entity: dict[str, Any], path: str) -> Any:
    value = _comparable(_field(entity, path), path)
    if isinstance(value, datetime):
        return (value, int(entity["Id"]))
    return (str(value) if value is not None else "", int(entity["Id"]))


def _answer(entity: str, value: dict[str, Any]) -> web.Response:
    return web.json_response({entity: value, "time": _now_text()})


async def _control_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise web.HTTPBadRequest(text="JSON body expected") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="a JSON object expected")
    return body


# --- the process ---------------------------------------------------------------------------------


@dataclass
class FakeQuickBooks(FakeServer):
    """`python -m tools.fake_quickbooks` as a process on a free port (see the module docstring)."""

    realm_id: str = DEFAULT_REALM

    name: ClassVar[str] = "fake-quickbooks"
    module: ClassVar[str] = "tools.fake_quickbooks"
    health_path: ClassVar[str] = "/_control/healthz"

    def arguments(self) -> list[str]:
        return ["--realm-id", self.realm_id]

    def control(self, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST /_control/<action> with a JSON body; the answer's JSON."""
        import httpx

        response = httpx.post(f"{self.base_url}/_control/{action}", json=body or {}, timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def listed(self, entity: str, realm_id: str) -> list[dict[str, Any]]:
        """GET /_control/<invoices|customers|payments>: the company's objects."""
        import httpx

        response = httpx.get(f"{self.base_url}/_control/{entity}", params={"realm_id": realm_id}, timeout=10)
        response.raise_for_status()
        key = {"invoices": "Invoice", "customers": "Customer", "payments": "Payment"}[entity]
        rows: list[dict[str, Any]] = response.json()[key]
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local QuickBooks Online (see the module docstring)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--realm-id", default=DEFAULT_REALM)
    parser.add_argument("--client-id", default=None)
    parser.add_argument("--client-secret", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    oauth = OAuthServer(realm_id=args.realm_id, rotate_refresh=True)
    if args.client_id and args.client_secret:
        oauth.clients = {args.client_id: args.client_secret}
    server = FakeQuickBooksServer(oauth)
    web.run_app(server.app(), host="127.0.0.1", port=args.port, print=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
