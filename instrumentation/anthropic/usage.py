"""Anthropic usage blocks -> normalised ``Usage``. Pure functions, no SDK imports.

Anthropic reports ``input_tokens`` WITHOUT the cached parts: the call's real input is
``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``. Cache writes are
split by lifetime in ``cache_creation.ephemeral_{5m,1h}_input_tokens``. Streams split usage:
``message_start`` carries the input side (and placeholder output), ``message_delta`` carries
cumulative output and may update input/cache counts.

Every function accepts SDK models or decoded JSON (dicts) alike.
"""

from __future__ import annotations

from typing import Any, Mapping

from tokentrail.processor.usage import InvalidUsage, Usage

_MISSING = object()


def field(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for a mapping, ``obj.name`` for a model; ``default`` when absent or None."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        value = obj.get(name, _MISSING)
    else:
        value = getattr(obj, name, _MISSING)
    return default if value is _MISSING or value is None else value


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidUsage(f"token count {value!r} is not an integer")
    return value


def usage_from_anthropic(usage: Any) -> Usage:
    """Normalise a Messages API ``usage`` block (Message.usage, or the merged stream usage).

    Raises ``InvalidUsage`` when the block is missing or malformed.
    """
    if usage is None:
        raise InvalidUsage("no usage block")
    raw_input = field(usage, "input_tokens")
    raw_output = field(usage, "output_tokens")
    if raw_input is None and raw_output is None:
        raise InvalidUsage("usage block has neither input_tokens nor output_tokens")
    cache_read = _count(field(usage, "cache_read_input_tokens"))
    creation = field(usage, "cache_creation")
    write_5m = _count(field(creation, "ephemeral_5m_input_tokens"))
    write_1h = _count(field(creation, "ephemeral_1h_input_tokens"))
    cache_write = field(usage, "cache_creation_input_tokens")
    # Older responses have only the total; some proxies only the breakdown.
    cache_write = _count(cache_write) if cache_write is not None else write_5m + write_1h
    if write_1h > cache_write:
        raise InvalidUsage(f"1-hour cache writes {write_1h} exceed cache writes {cache_write}")
    reasoning = _count(field(field(usage, "output_tokens_details"), "thinking_tokens"))
    tools: dict[str, int] = {}
    web_searches = _count(field(field(usage, "server_tool_use"), "web_search_requests"))
    if web_searches:
        tools["web_search"] = web_searches
    return Usage(
        input_tokens=_count(raw_input) + cache_read + cache_write,
        output_tokens=_count(raw_output),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=reasoning,
        tool_calls=tools,
    ).validate()


def service_tier(usage: Any) -> str | None:
    """The tier the API says it served the call on (standard, priority, batch)."""
    tier = field(usage, "service_tier")
    return tier if isinstance(tier, str) else None


_DELTA_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens_details",
    "server_tool_use",
)


class StreamState:
    """Folds a Messages stream's events into the final usage, model, id and stop reason.

    Feed every raw event (``RawMessageStreamEvent`` or decoded dict) to ``observe``; it
    never raises. ``message_delta`` counts are cumulative, so they replace (never add to)
    what ``message_start`` said.
    """

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.stop_reason: str | None = None
        self.error_type: str | None = None

    def observe(self, event: Any) -> None:
        try:
            kind = field(event, "type")
            if kind == "message_start":
                message = field(event, "message")
                self.model = field(message, "model", self.model)
                self.response_id = field(message, "id", self.response_id)
                self.usage = _usage_dict(field(message, "usage"))
            elif kind == "message_delta":
                delta_usage = field(event, "usage")
                merged = dict(self.usage or {})
                for name in _DELTA_FIELDS:
                    value = field(delta_usage, name)
                    if value is not None:
                        merged[name] = value
                self.usage = merged
                self.stop_reason = field(field(event, "delta"), "stop_reason", self.stop_reason)
            elif kind == "error":
                self.error_type = str(field(field(event, "error"), "type", "error"))
        except Exception:  # a stream we cannot read must still reach the caller untouched
            pass

    def final_usage(self) -> Usage | None:
        """The usage seen so far; None before ``message_start``. Raises ``InvalidUsage``."""
        if self.usage is None:
            return None
        return usage_from_anthropic(self.usage)


def _usage_dict(usage: Any) -> dict[str, Any]:
    if usage is None:
        return {}
    if isinstance(usage, Mapping):
        return dict(usage)
    dump = getattr(usage, "model_dump", None)
    if callable(dump):
        return dump()
    return {name: field(usage, name) for name in (*_DELTA_FIELDS, "cache_creation", "service_tier")}
