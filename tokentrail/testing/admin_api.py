"""Fake OpenAI and Anthropic admin (usage and cost) APIs: the provider's side of a reconciliation.

A test scripts what the provider billed as rows of an ``AdminBook`` (one row per day and group,
numbers summed over the groups a request does not ask for), then points
``tokentrail reconcile --base-url`` at ``admin_server(book).url``. Shapes, query parameters,
pagination and errors follow the API references (read 2026-12):

- OpenAI ``GET /v1/organization/usage/completions`` and ``GET /v1/organization/costs``
  (platform.openai.com/docs/api-reference/usage): ``{"object": "page", "data": [{"object":
  "bucket", "start_time", "end_time", "results": [...]}], "has_more", "next_page"}``; usage
  results ``organization.usage.completions.result`` with ``input_tokens`` (including cached),
  ``input_cached_tokens``, ``output_tokens``, ``num_model_requests`` and the grouped fields
  (``model``, ``project_id``, ``api_key_id``, ``batch``, ``service_tier``, null when not
  grouped); cost results ``organization.costs.result`` with ``amount: {"value", "currency"}``
  (USD, a JSON number), ``line_item`` (``"gpt-4o-mini-2024-07-18, cached input"``) and
  ``project_id``; the costs report has no tier grouping and the reference does not say how a line
  item names a tier: the book writes ``"flex | gpt-4o-mini-2024-07-18, input"``, the form the client reads; ``page`` is the cursor of the previous ``next_page``; auth ``Authorization:
  Bearer``; errors ``{"error": {"message", "type", "code"}}``.
- Anthropic ``GET /v1/organizations/usage_report/messages`` and ``GET /v1/organizations/cost_report``
  (docs.anthropic.com/en/api/admin-api/usage-cost): ``{"data": [{"starting_at", "ending_at",
  "results": [...]}], "has_more", "next_page"}`` with RFC 3339 UTC bucket bounds; usage results
  ``uncached_input_tokens``, ``cache_read_input_tokens``, ``cache_creation:
  {"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}``, ``output_tokens``,
  ``server_tool_use: {"web_search_requests"}`` and the ``group_by[]`` fields (``model``,
  ``api_key_id``, ``workspace_id``, ``service_tier``, ``context_window``); cost results
  ``amount`` (a decimal string in cents), ``currency`` ``"USD"``, and with
  ``group_by[]=description`` ``description``, ``model``, ``token_type``, ``cost_type``,
  ``service_tier``, ``context_window``; auth ``x-api-key`` plus ``anthropic-version``;
  errors ``{"type": "error", "error": {"type", "message"}}``.
- API key lists: OpenAI ``GET /v1/organization/projects`` and ``.../projects/<id>/api_keys``
  (``organization.project.api_key`` with ``id`` and ``redacted_value``), Anthropic
  ``GET /v1/organizations/api_keys`` (``id``, ``partial_key_hint``, ``workspace_id``); cursor pages
  of at most ``limit`` (and ``AdminBook.page_size``) items: ``first_id``, ``last_id``, ``has_more``,
  the next page asked for with ``after`` (OpenAI) or ``after_id`` (Anthropic) = the last id.

``server.enqueue(rate_limited("openai", retry_after=0))`` answers the next request with a 429.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable

from tokentrail.testing.server import FakeProviderServer, FakeRequest, FakeResponse

OPENAI_ADMIN_KEY = "sk-admin-fake"
ANTHROPIC_ADMIN_KEY = "sk-ant-admin01-fake"

_OPENAI_USAGE_GROUPS = ("model", "project_id", "api_key_id", "batch", "service_tier", "user_id")
_OPENAI_USAGE_SUMS = ("input_tokens", "input_cached_tokens", "output_tokens", "num_model_requests")
_OPENAI_COST_GROUPS = ("line_item", "project_id", "api_key_id")
_ANTHROPIC_USAGE_GROUPS = ("model", "api_key_id", "workspace_id", "service_tier", "context_window")
_ANTHROPIC_USAGE_SUMS = ("uncached_input_tokens", "cache_read_input_tokens", "ephemeral_5m_input_tokens",
                         "ephemeral_1h_input_tokens", "output_tokens", "web_search_requests")
_ANTHROPIC_DESCRIPTION = ("description", "model", "token_type", "cost_type", "service_tier", "context_window")


@dataclass
class AdminBook:
    """What the provider billed. Each row is a dict with ``day`` (a ``date``), group fields and numbers.

    OpenAI usage rows: ``model``, ``project_id``, ``api_key_id``, ``service_tier``, ``batch`` and
    ``input_tokens`` (including cached), ``input_cached_tokens``, ``output_tokens``,
    ``num_model_requests``. OpenAI cost rows: ``line_item``, ``project_id``, ``api_key_id``,
    ``usd`` (a decimal string). Anthropic usage rows: ``model``, ``api_key_id``, ``workspace_id``,
    ``service_tier`` and the token counts of ``_ANTHROPIC_USAGE_SUMS``. Anthropic cost rows:
    ``workspace_id``, the description fields and ``cents`` (a decimal string).
    """

    openai_usage: list[dict[str, Any]] = field(default_factory=list)
    openai_costs: list[dict[str, Any]] = field(default_factory=list)
    anthropic_usage: list[dict[str, Any]] = field(default_factory=list)
    anthropic_costs: list[dict[str, Any]] = field(default_factory=list)
    #: The largest page a request may ask for (day buckets, list items); small, so pagination is exercised.
    page_size: int = 2
    #: API keys: OpenAI ``{project_id: {key_id: redacted_value}}``; Anthropic ``{key_id: partial_key_hint}``
    #: or ``{key_id: (partial_key_hint, workspace_id)}``.
    openai_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    anthropic_keys: dict[str, str | tuple[str, str | None]] = field(default_factory=dict)
    #: Request number (0-based, over every admin route) -> the response it gets instead, e.g. a 429
    #: on the second page: ``{1: rate_limited("openai")}``.
    script: dict[int, FakeResponse] = field(default_factory=dict)
    requests: int = 0


def admin_server(book: AdminBook) -> FakeProviderServer:
    """A started server with both providers' admin routes (``/v1/...``); stop it (or use ``with``)."""
    server = FakeProviderServer()
    register(server, book)
    return server.start()


def register(server: FakeProviderServer, book: AdminBook) -> None:
    routes = (
        (r"/v1/organization/usage/completions", _openai_usage),
        (r"/v1/organization/costs", _openai_costs),
        (r"/v1/organizations/usage_report/messages", _anthropic_usage),
        (r"/v1/organizations/cost_report", _anthropic_costs),
        (r"/v1/organization/projects", _openai_projects),
        (r"/v1/organization/projects/([^/]+)/api_keys", _openai_project_keys),
        (r"/v1/organizations/api_keys", _anthropic_keys),
    )
    for pattern, handler in routes:
        server.route("GET", pattern, _scripted(book, handler))


def _scripted(book: AdminBook, handler):
    def handle(request: FakeRequest) -> FakeResponse:
        number, book.requests = book.requests, book.requests + 1
        return book.script.pop(number) if number in book.script else handler(request, book)

    return handle


def openai_error(status: int, message: str, code: str | None = None, headers: dict | None = None) -> FakeResponse:
    kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
    return FakeResponse(status=status, json={"error": {"message": message, "type": kind, "param": None, "code": code}},
                        headers=headers or {})


def anthropic_error(status: int, message: str, headers: dict | None = None) -> FakeResponse:
    kind = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(status, "api_error")
    return FakeResponse(status=status, json={"type": "error", "error": {"type": kind, "message": message}},
                        headers=headers or {})


def rate_limited(provider: str, retry_after: float = 0) -> FakeResponse:
    headers = {"retry-after": str(retry_after)}
    if provider == "openai":
        return openai_error(429, "Rate limit reached for organization usage requests", "rate_limit_exceeded", headers)
    return anthropic_error(429, "Number of request tokens has exceeded your rate limit", headers)


# --- OpenAI ------------------------------------------------------------------------------------
def _openai_auth(request: FakeRequest) -> FakeResponse | None:
    if request.headers.get("authorization") != f"Bearer {OPENAI_ADMIN_KEY}":
        return openai_error(401, "Incorrect API key provided. You must be an Owner and use an admin key.",
                            "invalid_api_key")
    return None


def _openai_days(request: FakeRequest) -> list[date] | FakeResponse:
    try:
        start = int(request.query["start_time"][0])
        end = int(request.query.get("end_time", [str(start + 7 * 86400)])[0])
    except (KeyError, ValueError):
        return openai_error(400, "start_time is required (Unix seconds)", "invalid_request")
    return _days(datetime.fromtimestamp(start, timezone.utc), datetime.fromtimestamp(end, timezone.utc))


def _openai_page(request: FakeRequest, book: AdminBook, results) -> FakeResponse:
    if (denied := _openai_auth(request)) is not None:
        return denied
    days = _openai_days(request)
    if isinstance(days, FakeResponse):
        return days
    page, has_more, next_page = _paginate(days, request, book.page_size)
    data = [{"object": "bucket", "start_time": _epoch(day), "end_time": _epoch(day) + 86400,
             "results": results(day)} for day in page]
    return FakeResponse(json={"object": "page", "data": data, "has_more": has_more, "next_page": next_page})


def _openai_usage(request: FakeRequest, book: AdminBook) -> FakeResponse:
    groups = [g for g in request.query.get("group_by", []) + request.query.get("group_by[]", [])
              if g in _OPENAI_USAGE_GROUPS]

    def results(day: date) -> list[dict]:
        out = []
        for key, sums in _group(book.openai_usage, day, groups, _OPENAI_USAGE_SUMS):
            row = {"object": "organization.usage.completions.result", **sums}
            row.update({g: key.get(g) for g in _OPENAI_USAGE_GROUPS})
            out.append(row)
        return out

    return _openai_page(request, book, results)


def _openai_costs(request: FakeRequest, book: AdminBook) -> FakeResponse:
    groups = [g for g in request.query.get("group_by", []) + request.query.get("group_by[]", [])
              if g in _OPENAI_COST_GROUPS]

    def results(day: date) -> list[dict]:
        out = []
        for key, sums in _group(book.openai_costs, day, groups, ("usd",), decimal=True):
            row = {"object": "organization.costs.result", "amount": {"value": float(sums["usd"]), "currency": "usd"}}
            row.update({g: key.get(g) for g in _OPENAI_COST_GROUPS})
            out.append(row)
        return out

    return _openai_page(request, book, results)


def _openai_list(request: FakeRequest, book: AdminBook, items: list[dict]) -> FakeResponse:
    if (denied := _openai_auth(request)) is not None:
        return denied
    return FakeResponse(json={"object": "list", **_list_page(items, request, "after", book.page_size)})


def _list_page(items: list[dict], request: FakeRequest, cursor: str, page_size: int) -> dict[str, Any]:
    """One cursor page of a list: the items after the ``cursor`` id, at most ``limit`` of them."""
    limit = min(int(request.query.get("limit", ["20"])[0]), page_size)
    after = request.query.get(cursor, [None])[0]
    ids = [i["id"] for i in items]
    start = ids.index(after) + 1 if after in ids else 0
    page = items[start:start + limit]
    return {"data": page, "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(items)}


def _openai_projects(request: FakeRequest, book: AdminBook) -> FakeResponse:
    return _openai_list(request, book, [{"id": p, "object": "organization.project", "name": p, "created_at": 1_700_000_000,
                                   "archived_at": None, "status": "active"} for p in book.openai_keys])


def _openai_project_keys(request: FakeRequest, book: AdminBook) -> FakeResponse:
    keys = book.openai_keys.get(request.match.group(1), {})
    return _openai_list(request, book, [
        {"object": "organization.project.api_key", "redacted_value": redacted, "name": key_id,
         "created_at": 1_700_000_000, "last_used_at": None, "id": key_id,
         "owner": {"type": "service_account", "service_account": {"id": "svc_acct_1", "name": "svc"}}}
        for key_id, redacted in keys.items()])


# --- Anthropic ---------------------------------------------------------------------------------
def _anthropic_keys(request: FakeRequest, book: AdminBook) -> FakeResponse:
    if (denied := _anthropic_guard(request)) is not None:
        return denied
    items = []
    for key_id, value in book.anthropic_keys.items():
        hint, workspace = value if isinstance(value, tuple) else (value, None)
        items.append({"id": key_id, "type": "api_key", "name": key_id, "workspace_id": workspace,
                      "created_at": "2026-01-01T00:00:00Z", "created_by": {"id": "user_01", "type": "user"},
                      "partial_key_hint": hint, "status": "active"})
    return FakeResponse(json=_list_page(items, request, "after_id", book.page_size))


def _anthropic_guard(request: FakeRequest) -> FakeResponse | None:
    if request.headers.get("x-api-key") != ANTHROPIC_ADMIN_KEY:
        return anthropic_error(401, "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        return anthropic_error(400, "anthropic-version: header is required")
    return None


def _anthropic_page(request: FakeRequest, book: AdminBook, results) -> FakeResponse:
    if (denied := _anthropic_guard(request)) is not None:
        return denied
    try:
        start = _rfc3339(request.query["starting_at"][0])
        end = _rfc3339(request.query["ending_at"][0]) if "ending_at" in request.query else start + timedelta(days=7)
    except (KeyError, ValueError):
        return anthropic_error(400, "starting_at: a RFC 3339 timestamp is required")
    page, has_more, next_page = _paginate(_days(start, end), request, book.page_size)
    data = [{"starting_at": f"{day.isoformat()}T00:00:00Z", "ending_at": f"{(day + timedelta(days=1)).isoformat()}T00:00:00Z",
             "results": results(day)} for day in page]
    return FakeResponse(json={"data": data, "has_more": has_more, "next_page": next_page})


def _anthropic_usage(request: FakeRequest, book: AdminBook) -> FakeResponse:
    groups = [g for g in request.query.get("group_by[]", []) if g in _ANTHROPIC_USAGE_GROUPS]

    def results(day: date) -> list[dict]:
        out = []
        for key, s in _group(book.anthropic_usage, day, groups, _ANTHROPIC_USAGE_SUMS):
            row = {
                "uncached_input_tokens": s["uncached_input_tokens"],
                "cache_creation": {"ephemeral_1h_input_tokens": s["ephemeral_1h_input_tokens"],
                                   "ephemeral_5m_input_tokens": s["ephemeral_5m_input_tokens"]},
                "cache_read_input_tokens": s["cache_read_input_tokens"],
                "output_tokens": s["output_tokens"],
                "server_tool_use": {"web_search_requests": s["web_search_requests"]},
            }
            row.update({g: key.get(g) for g in _ANTHROPIC_USAGE_GROUPS})
            out.append(row)
        return out

    return _anthropic_page(request, book, results)


def _anthropic_costs(request: FakeRequest, book: AdminBook) -> FakeResponse:
    asked = request.query.get("group_by[]", [])
    groups = (["workspace_id"] if "workspace_id" in asked else []) + (
        list(_ANTHROPIC_DESCRIPTION) if "description" in asked else [])

    def results(day: date) -> list[dict]:
        out = []
        for key, s in _group(book.anthropic_costs, day, groups, ("cents",), decimal=True):
            row = {"amount": str(s["cents"]), "currency": "USD", "workspace_id": key.get("workspace_id")}
            row.update({g: key.get(g) for g in _ANTHROPIC_DESCRIPTION})
            out.append(row)
        return out

    return _anthropic_page(request, book, results)


# --- shared ------------------------------------------------------------------------------------
def _group(rows: Iterable[dict], day: date, groups: list[str], sums: tuple[str, ...], decimal: bool = False):
    out: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        if row["day"] != day:
            continue
        key = tuple(row.get(g) for g in groups)
        acc = out.setdefault(key, {s: Decimal(0) if decimal else 0 for s in sums})
        for s in sums:
            acc[s] += Decimal(str(row.get(s, 0))) if decimal else int(row.get(s, 0))
    return [(dict(zip(groups, key)), acc) for key, acc in out.items()]


def _days(start: datetime, end: datetime) -> list[date]:
    """The UTC day buckets overlapping [start, end), snapped to midnight as the APIs do."""
    day, days = start.astimezone(timezone.utc).date(), []
    while datetime(day.year, day.month, day.day, tzinfo=timezone.utc) < end:
        days.append(day)
        day += timedelta(days=1)
    return days


def _paginate(days: list[date], request: FakeRequest, page_size: int) -> tuple[list[date], bool, str | None]:
    limit = min(int(request.query.get("limit", [str(page_size)])[0]), page_size)
    token = request.query.get("page", [None])[0]
    offset = int(base64.urlsafe_b64decode(token.encode()).decode().rpartition("_")[2]) if token else 0
    page = days[offset:offset + limit]
    more = offset + limit < len(days)
    next_page = base64.urlsafe_b64encode(f"page_{offset + limit}".encode()).decode() if more else None
    return page, more, next_page


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())


def _rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
