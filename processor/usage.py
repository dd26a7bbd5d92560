"""The normalised usage record: one shape for every provider's token counts.

Provider instrumentations translate their SDK's usage block into ``Usage``; pricing and
metrics only ever see this record, never a provider's field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from tokentrail.semconv import attributes as attr


class InvalidUsage(ValueError):
    """The reported parts do not add up (e.g. more cached tokens than input tokens)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call, upstream semantics: totals include their parts.

    ``input_tokens`` includes cache reads and cache writes; ``output_tokens`` includes
    reasoning. ``cache_write_tokens`` is all writes; ``cache_write_1h_tokens`` is the part of
    them written with a 1-hour lifetime. ``tool_calls`` counts billable server-side tools.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    tool_calls: Mapping[str, int] = field(default_factory=dict)

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens

    @property
    def cache_write_5m_tokens(self) -> int:
        return self.cache_write_tokens - self.cache_write_1h_tokens

    def validate(self) -> "Usage":
        counts = (
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.cache_write_1h_tokens,
            self.reasoning_tokens,
            *self.tool_calls.values(),
        )
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in counts):
            raise InvalidUsage(f"token counts must be non-negative integers: {self!r}")
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise InvalidUsage(
                f"cache read {self.cache_read_tokens} + cache write {self.cache_write_tokens}"
                f" exceed input {self.input_tokens}"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise InvalidUsage("1-hour cache writes exceed all cache writes")
        if self.reasoning_tokens > self.output_tokens:
            raise InvalidUsage(f"reasoning {self.reasoning_tokens} exceeds output {self.output_tokens}")
        return self

    def to_attributes(self) -> dict[str, Any]:
        """Span attributes for this usage (zero-valued optional parts are left out)."""
        out: dict[str, Any] = {
            attr.GEN_AI_USAGE_INPUT_TOKENS: self.input_tokens,
            attr.GEN_AI_USAGE_OUTPUT_TOKENS: self.output_tokens,
        }
        optional = (
            (attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, self.cache_read_tokens),
            (attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, self.cache_write_tokens),
            (attr.TOKENTRAIL_USAGE_CACHE_WRITE_1H_INPUT_TOKENS, self.cache_write_1h_tokens),
            (attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, self.reasoning_tokens),
        )
        out.update((name, value) for name, value in optional if value)
        if self.tool_calls:
            out[attr.TOKENTRAIL_USAGE_TOOL_CALLS] = ",".join(f"{k}={v}" for k, v in sorted(self.tool_calls.items()))
        return out

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> "Usage | None":
        """Read usage from any instrumentation's span attributes; None when there is none.

        Raises ``InvalidUsage`` when present but inconsistent or malformed.
        """
        input_tokens = attributes.get(attr.GEN_AI_USAGE_INPUT_TOKENS)
        output_tokens = attributes.get(attr.GEN_AI_USAGE_OUTPUT_TOKENS)
        if input_tokens is None and output_tokens is None:
            return None
        cache_write = attributes.get(attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS)
        if cache_write is None:
            cache_write = attributes.get(attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, 0)
        tools: dict[str, int] = {}
        raw_tools = attributes.get(attr.TOKENTRAIL_USAGE_TOOL_CALLS)
        try:
            if raw_tools:
                for pair in str(raw_tools).split(","):
                    name, _, count = pair.partition("=")
                    tools[name.strip()] = int(count)
            usage = cls(
                input_tokens=_as_int(input_tokens),
                output_tokens=_as_int(output_tokens),
                cache_read_tokens=_as_int(attributes.get(attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)),
                cache_write_tokens=_as_int(cache_write),
                cache_write_1h_tokens=_as_int(attributes.get(attr.TOKENTRAIL_USAGE_CACHE_WRITE_1H_INPUT_TOKENS)),
                reasoning_tokens=_as_int(attributes.get(attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)),
                tool_calls=tools,
            )
        except (TypeError, ValueError) as exc:
            raise InvalidUsage(f"malformed usage attributes: {exc}") from exc
        return usage.validate()


def _as_int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise TypeError(f"boolean token count {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        raise TypeError(f"token count {value!r} is not an integer")
    return value
