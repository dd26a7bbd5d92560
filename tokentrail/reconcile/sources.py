"""The provider's side: usage and cost per UTC day from the OpenAI and Anthropic admin APIs.

Each source reads every page of its two reports (usage, cost) before returning anything, so a
failure (auth, rate limit after the bounded retries, a bad page) is one ``SourceError`` line and
no half-read bill. Amounts become integer nano-USD through ``Decimal`` (OpenAI: USD numbers;
Anthropic: decimal strings in cents). Response shapes: see ``tokentrail.testing.admin_api``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Iterator

from tokentrail.processor.usage import normalise_model_id

NANO = Decimal(10) ** 9
#: Token classes, as both sides are compared. ``other`` is money with no tokens (web search...).
CLASSES = ("input", "cache_read", "cache_write", "cache_write_1h", "output")
OTHER = "other"

OPENAI_BASE = "https://api.openai.com/v1"
ANTHROPIC_BASE = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
#: Attempts per page on 429 / 5xx, and the longest wait a ``retry-after`` may ask for.
MAX_ATTEMPTS = 4
MAX_WAIT_S = 60.0
TIMEOUT_S = 60.0


class SourceError(Exception):
    """The provider's figures could not be read; the message is one line for the user."""


STANDARD = "standard"
_TIER_ALIASES = {"": STANDARD, "default": STANDARD, "auto": STANDARD, "standard_only": STANDARD,
                 "priority_on_demand": "priority", "flex_discount": "flex"}


def tier_name(value: Any, batch: Any = False) -> str:
    """One name per service tier on both sides: ``standard`` (OpenAI's ``default``), ``batch``, ``flex``..."""
    if batch is True:
        return "batch"
    text = str(value or "").strip().lower()
    return _TIER_ALIASES.get(text, text)


@dataclass
class Line:
    """The provider's figures for one day and group (model, and the join keys it reports)."""

    day: date
    model: str
    project: str | None = None
    api_key: str | None = None
    workspace: str | None = None
    tier: str | None = STANDARD  # the service tier billed (see ``tier_name``); None: a cost line that does not say
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    cost_nano: dict[str, int] = field(default_factory=dict)  # class (or ``other``) -> nano-USD
    requests: int = 0

    def key(self) -> tuple:
        return self.day, self.model, self.project, self.api_key, self.workspace, self.tier


def to_nano(amount: Any, scale: Decimal = Decimal(1)) -> int:
    """An amount (USD, or cents with ``scale`` 1/100) as integer nano-USD, exactly."""
    try:
        value = Decimal(repr(amount) if isinstance(amount, float) else str(amount))
    except (InvalidOperation, ValueError):
        raise SourceError(f"the provider sent an amount that is not a number: {amount!r}") from None
    return int((value * scale * NANO).to_integral_value())


# --- HTTP ----------------------------------------------------------------------------------------
Sleep = Callable[[float], None]


def get_json(url: str, headers: dict[str, str], provider: str, sleep: Sleep = time.sleep) -> Any:
    """GET with bounded retries on 429 / 5xx (honouring ``retry-after``); one-line errors."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        request = urllib.request.Request(url, headers={"accept": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = _error_message(exc)
            if exc.code in (401, 403):
                raise SourceError(f"{provider} admin API refused the key ({exc.code}: {body}): use an admin key"
                                  f" ({KEY_ENV[provider]})") from None
            if exc.code == 429 or exc.code >= 500:
                if attempt == MAX_ATTEMPTS:
                    what = "rate limited" if exc.code == 429 else f"failing ({exc.code})"
                    raise SourceError(f"{provider} admin API still {what} after {MAX_ATTEMPTS} attempts: {body};"
                                      " nothing was stored, try again later") from None
                sleep(_retry_after(exc, attempt))
                continue
            raise SourceError(f"{provider} admin API error {exc.code}: {body}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceError(f"cannot reach the {provider} admin API at {_origin(url)}: {reason}") from None
        except ValueError:
            raise SourceError(f"{provider} admin API sent a response that is not JSON ({_origin(url)})") from None
    raise AssertionError("unreachable")


KEY_ENV = {"openai": "OPENAI_ADMIN_KEY", "anthropic": "ANTHROPIC_ADMIN_KEY"}


def _retry_after(exc: urllib.error.HTTPError, attempt: int) -> float:
    try:
        wait = float(exc.headers.get("retry-after", ""))
    except ValueError:
        wait = 2.0 ** attempt
    return max(0.0, min(wait, MAX_WAIT_S))


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read() or b"{}").get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError, OSError):
        message = None
    return " ".join(str(message or exc.reason).split())[:200]


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _pages(url: str, params: list[tuple[str, str]], headers: dict[str, str], provider: str,
           sleep: Sleep) -> Iterator[dict]:
    page: str | None = None
    while True:
        query = params + ([("page", page)] if page else [])
        body = get_json(f"{url}?{urllib.parse.urlencode(query)}", headers, provider, sleep)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise SourceError(f"{provider} admin API sent an unexpected page (no data list) from {url}")
        yield from body["data"]
        page = body.get("next_page")
        if not body.get("has_more") or not page:
            return


# --- OpenAI ----------------------------------------------------------------------------------------
_OPENAI_CLASS = {"input": "input", "cached input": "cache_read", "output": "output"}


def openai_lines(base_url: str, key: str, since: datetime, until: datetime, *, keys: bool = False,
                 sleep: Sleep = time.sleep) -> list[Line]:
    """``/organization/usage/completions`` and ``/organization/costs`` by day, model, project and key.

    ``keys``: name each key by its redacted form (``/organization/projects/<id>/api_keys``), as the ledger does.
    """
    base = base_url.rstrip("/")
    headers = {"authorization": f"Bearer {key}"}
    window = [("start_time", str(int(since.timestamp()))), ("end_time", str(int(until.timestamp()))),
              ("bucket_width", "1d"), ("limit", "31")]
    lines: dict[tuple, Line] = {}
    usage = window + [("group_by", g) for g in ("model", "project_id", "api_key_id", "batch", "service_tier")]
    for bucket in _pages(base + "/organization/usage/completions", usage, headers, "openai", sleep):
        day = _day(bucket.get("start_time"))
        for r in bucket.get("results") or ():
            line = _line(lines, day, r.get("model"), r.get("project_id"), r.get("api_key_id"), None,
                         tier_name(r.get("service_tier"), r.get("batch")))
            cached = int(r.get("input_cached_tokens") or 0)
            line.tokens["input"] += int(r.get("input_tokens") or 0) - cached  # input_tokens includes cached
            line.tokens["cache_read"] += cached
            line.tokens["output"] += int(r.get("output_tokens") or 0)
            line.requests += int(r.get("num_model_requests") or 0)
    costs = window + [("group_by", g) for g in ("line_item", "project_id", "api_key_id")]
    for bucket in _pages(base + "/organization/costs", costs, headers, "openai", sleep):
        day = _day(bucket.get("start_time"))
        for r in bucket.get("results") or ():
            amount = r.get("amount") or {}
            if str(amount.get("currency", "usd")).lower() != "usd":
                raise SourceError(f"openai costs in {amount.get('currency')!r}: only USD bills are reconciled")
            model, kind, tier = _openai_line_item(r.get("line_item"))
            line = _line(lines, day, model, r.get("project_id"), r.get("api_key_id"), None, tier)
            line.cost_nano[kind] = line.cost_nano.get(kind, 0) + to_nano(amount.get("value", 0))
    if keys:
        _name_keys(lines.values(), _openai_key_names(base, headers, sleep))
    return list(lines.values())


def _openai_key_names(base: str, headers: dict[str, str], sleep: Sleep) -> dict[str, str]:
    names = {}
    for project in _listing(base + "/organization/projects", headers, "openai", sleep):
        for item in _listing(f"{base}/organization/projects/{project['id']}/api_keys", headers, "openai", sleep):
            if item.get("id") and item.get("redacted_value"):
                names[item["id"]] = item["redacted_value"]
    return names


def _openai_line_item(item: Any) -> tuple[str, str, str | None]:
    """``"priority | gpt-4o-2024-08-06, cached input"`` -> (``gpt-4o-2024-08-06``, ``cache_read``, ``priority``).

    The costs report cannot be grouped by tier: a line item names it (a ``tier |`` prefix or a
    trailing ``, batch``) or the tier is unknown (None).
    """
    prefix, bar, text = str(item or "").rpartition("|")
    model, sep, rest = text.strip().partition(",")
    parts = [p.strip().lower() for p in rest.split(",")]
    if not sep or parts[0] not in _OPENAI_CLASS:
        return "", OTHER, STANDARD  # a tool or storage line (web search, vector storage): money without tokens
    named = prefix.strip() if bar else (parts[1] if len(parts) > 1 else "")
    return model.strip(), _OPENAI_CLASS[parts[0]], tier_name(named) if named else None


# --- Anthropic -------------------------------------------------------------------------------------
_ANTHROPIC_CLASS = {
    "uncached_input_tokens": "input",
    "cache_read_input_tokens": "cache_read",
    "cache_creation.ephemeral_5m_input_tokens": "cache_write",
    "cache_creation.ephemeral_1h_input_tokens": "cache_write_1h",
    "output_tokens": "output",
}
_CENTS = Decimal("0.01")


def anthropic_lines(base_url: str, key: str, since: datetime, until: datetime, *, keys: bool = False,
                    sleep: Sleep = time.sleep) -> list[Line]:
    """``usage_report/messages`` and ``cost_report`` by day, model, workspace and (usage only) key.

    ``keys``: name each key by its ``partial_key_hint`` (``/v1/organizations/api_keys``), as the ledger does.
    """
    base = base_url.rstrip("/")
    headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
    window = [("starting_at", _rfc3339(since)), ("ending_at", _rfc3339(until)), ("bucket_width", "1d"),
              ("limit", "31")]
    lines: dict[tuple, Line] = {}
    usage = window + [("group_by[]", g) for g in ("model", "workspace_id", "api_key_id", "service_tier")]
    for bucket in _pages(base + "/v1/organizations/usage_report/messages", usage, headers, "anthropic", sleep):
        day = _day(bucket.get("starting_at"))
        for r in bucket.get("results") or ():
            line = _line(lines, day, r.get("model"), None, r.get("api_key_id"), r.get("workspace_id"),
                         tier_name(r.get("service_tier")))
            creation = r.get("cache_creation") or {}
            line.tokens["input"] += int(r.get("uncached_input_tokens") or 0)
            line.tokens["cache_read"] += int(r.get("cache_read_input_tokens") or 0)
            line.tokens["cache_write"] += int(creation.get("ephemeral_5m_input_tokens") or 0)
            line.tokens["cache_write_1h"] += int(creation.get("ephemeral_1h_input_tokens") or 0)
            line.tokens["output"] += int(r.get("output_tokens") or 0)
    costs = window[:3] + [("group_by[]", "workspace_id"), ("group_by[]", "description")]
    for bucket in _pages(base + "/v1/organizations/cost_report", costs, headers, "anthropic", sleep):
        day = _day(bucket.get("starting_at"))
        for r in bucket.get("results") or ():
            if str(r.get("currency", "USD")).upper() != "USD":
                raise SourceError(f"anthropic costs in {r.get('currency')!r}: only USD bills are reconciled")
            kind = _ANTHROPIC_CLASS.get(r.get("token_type") or "", OTHER) if r.get("cost_type") in (None, "tokens") \
                else OTHER
            model, tier = (r.get("model"), r.get("service_tier")) if kind != OTHER else ("", STANDARD)
            line = _line(lines, day, model, None, None, r.get("workspace_id"), None if tier is None else tier_name(tier))
            line.cost_nano[kind] = line.cost_nano.get(kind, 0) + to_nano(r.get("amount", "0"), _CENTS)
    if keys:
        _name_keys(lines.values(), {i["id"]: i["partial_key_hint"] for i in _anthropic_keys(base, headers, sleep)})
    return list(lines.values())


def anthropic_key_workspaces(base_url: str, key: str, *, sleep: Sleep = time.sleep) -> dict[str, str]:
    """``partial_key_hint`` -> ``workspace_id`` of the organization's keys: the ledger's calls' workspace."""
    headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
    return {i["partial_key_hint"]: i["workspace_id"] for i in _anthropic_keys(base_url.rstrip("/"), headers, sleep)
            if i.get("workspace_id")}


def _anthropic_keys(base: str, headers: dict[str, str], sleep: Sleep) -> list[dict]:
    return [i for i in _listing(base + "/v1/organizations/api_keys", headers, "anthropic", sleep)
            if i.get("id") and i.get("partial_key_hint")]


# --- shared ----------------------------------------------------------------------------------------
def _line(lines: dict[tuple, Line], day: date, model: Any, project: Any, api_key: Any, workspace: Any,
          tier: str | None = STANDARD) -> Line:
    line = Line(day, normalise_model_id(model), project or None, api_key or None, workspace or None, tier)
    return lines.setdefault(line.key(), line)


def _name_keys(lines: Iterable[Line], names: dict[str, str]) -> None:
    for line in lines:
        if line.api_key in names:
            line.api_key = names[line.api_key]


def _listing(url: str, headers: dict[str, str], provider: str, sleep: Sleep) -> Iterator[dict]:
    """Every item of a cursor-paged admin list (``after`` / ``after_id`` = the last id, while ``has_more``)."""
    cursor = "after" if provider == "openai" else "after_id"
    after: str | None = None
    while True:
        query = [("limit", "100")] + ([(cursor, after)] if after else [])
        body = get_json(f"{url}?{urllib.parse.urlencode(query)}", headers, provider, sleep)
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise SourceError(f"{provider} admin API sent an unexpected list (no data) from {url}")
        yield from (i for i in items if isinstance(i, dict))
        after = body.get("last_id") or (items[-1].get("id") if items else None)
        if not body.get("has_more") or not after:
            return


def _day(value: Any) -> date:
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, timezone.utc).date()
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(timezone.utc).date()
    except (ValueError, OverflowError, OSError):
        raise SourceError(f"the provider sent a bucket without a readable start time: {value!r}") from None


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
