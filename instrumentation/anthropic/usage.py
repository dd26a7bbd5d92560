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

from tokentrail.instrumentation.fields import as_block, count, field, reader, validated
from tokentrail.instrumentation.streams import StreamState
from tokentrail.processor.usage import Usage


@validated
def usage_from_anthropic(usage: Any) -> Usage | None:
    """Normalise a Messages API ``usage`` block (Message.usage, or the merged stream usage).

    None when there is no block; raises ``InvalidUsage`` when it is malformed.
    """
    get = reader(as_block(usage))
    found = (get("input_tokens"), get("output_tokens"))
    if found == (None, None):
        return None
    creation = as_block(get("cache_creation"), "cache_creation")
    write_1h = count(field(creation, "ephemeral_1h_input_tokens"))
    cache_write = get("cache_creation_input_tokens")
    # Older responses have only the total; some proxies only the breakdown.
    if cache_write is None:
        cache_write = count(field(creation, "ephemeral_5m_input_tokens")) + write_1h
    web_searches = count(field(as_block(get("server_tool_use"), "server_tool_use"), "web_search_requests"))
    return usage_beside_cache(
        *found, get("cache_read_input_tokens"), cache_write, write_1h,
        reasoning=field(as_block(get("output_tokens_details"), "output_tokens_details"), "thinking_tokens"),
        tool_calls={"web_search": web_searches} if web_searches else None,
    )


def usage_beside_cache(input_tokens: Any, output_tokens: Any, cache_read: Any = None, cache_write: Any = None,
                       cache_write_1h: Any = None, *, reasoning: Any = None,
                       tool_calls: dict[str, int] | None = None) -> Usage:
    """The ``Usage`` of counts reported as Anthropic and Bedrock do: input WITHOUT the cache
    reads and writes, which are added to it. Raises ``InvalidUsage``."""
    read, write = count(cache_read), count(cache_write)
    return Usage(
        input_tokens=count(input_tokens) + read + write,
        output_tokens=count(output_tokens),
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=count(cache_write_1h),
        reasoning_tokens=count(reasoning),
        tool_calls=tool_calls or {},
    ).validate()


def service_tier(usage: Any) -> str | None:
    """The tier the API says it served the call on (standard, priority, batch)."""
    tier = field(usage, "service_tier")
    return tier if isinstance(tier, str) else None


def message_facts(message: Any) -> dict[str, Any]:
    """``LLMCall.set_response`` arguments of a Message (SDK model or decoded JSON)."""
    get = reader(message)
    stop = get("stop_reason")
    return {"model": get("model"), "response_id": get("id"),
            "finish_reasons": [stop] if stop else None, "service_tier": service_tier(get("usage"))}


_DELTA_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens_details",
    "server_tool_use",
)


class MessageStreamState(StreamState):
    """Folds a Messages stream's events into the final usage, model, id and stop reason.

    Feed every raw event (``RawMessageStreamEvent`` or decoded dict) to ``add``; it never
    raises. ``message_delta`` counts are cumulative, so they replace (never add to) what
    ``message_start`` said. A stream that ends before any ``message_delta`` is ``partial``:
    priced on ``message_start``'s counts (exact input and cache, placeholder output).
    """

    __slots__ = ("usage_block", "model", "response_id", "stop_reason", "delta_seen")

    def __init__(self) -> None:
        self.usage_block: dict[str, Any] | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.stop_reason: str | None = None
        self.delta_seen = False

    def add(self, event: Any) -> None:
        try:
            kind = field(event, "type")
            if kind == "message_start":
                message = field(event, "message")
                self.model = field(message, "model", self.model)
                self.response_id = field(message, "id", self.response_id)
                self.usage_block = _usage_dict(field(message, "usage"))
            elif kind == "message_delta":
                delta_usage = field(event, "usage")
                self.delta_seen = self.delta_seen or delta_usage is not None
                merged = dict(self.usage_block or {})
                for name in _DELTA_FIELDS:
                    value = field(delta_usage, name)
                    if value is not None:
                        merged[name] = value
                self.usage_block = merged
                self.stop_reason = field(field(event, "delta"), "stop_reason", self.stop_reason)
        except Exception:  # a stream we cannot read must still reach the caller untouched
            pass

    def response(self) -> dict[str, Any]:
        return {"model": self.model, "response_id": self.response_id,
                "finish_reasons": [self.stop_reason] if self.stop_reason else None,
                "service_tier": service_tier(self.usage_block)}

    @validated  # usage_from_anthropic's
    def usage(self) -> Usage | None:
        """The usage seen so far; None before ``message_start``. Raises ``InvalidUsage``."""
        return None if self.usage_block is None else usage_from_anthropic(self.usage_block)

    def partial(self) -> bool:
        return not self.delta_seen


def _usage_dict(usage: Any) -> dict[str, Any]:
    if usage is None:
        return {}
    if isinstance(usage, Mapping):
        return dict(usage)
    dump = getattr(usage, "model_dump", None)
    if callable(dump):
        return dump()
    return {name: field(usage, name) for name in (*_DELTA_FIELDS, "cache_creation", "service_tier")}
