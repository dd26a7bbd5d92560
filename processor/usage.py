"""The lowest processor layer: what a GenAI call span says, read in one place.

``Usage`` is the one shape of every provider's token counts (``Usage.from_attributes`` the
one reader of it from span attributes), ``is_genai_call`` the one "this span is a model
call" rule, ``normalise_model_id`` the one model-id normaliser. Imports only semconv, state and
telemetry (the one counter below).

Plausibility: no count may exceed ``MAX_TOKENS_PER_CALL``. A larger one (a broken proxy, a bug
upstream) is malformed usage like a negative one: the call is ``no_usage``, its counts reach no
metric, cost or ledger sum (a 10**19 count overflows the int64 sums OTLP and SQLite keep). Each
report our instrumentations reject (``Usage.validate``) is counted once, on
``tokentrail.usage.implausible`` and ``implausible_count()``, and the first one is logged.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from tokentrail import telemetry
from tokentrail.semconv import attributes as attr
from tokentrail.state import register_reset

_logger = logging.getLogger(__name__)

#: The most tokens of one kind (or billable tool calls) one request can bill: ten times the
#: largest context window offered (10M). Keeps every sum we keep far below int64 (9.2e18).
MAX_TOKENS_PER_CALL = 100_000_000


class InvalidUsage(ValueError):
    """The reported parts do not add up (e.g. more cached tokens than input tokens)."""


class ImplausibleUsage(InvalidUsage):
    """A count beyond ``MAX_TOKENS_PER_CALL``: no model bills that much in one request."""


class _Implausible:
    """How many usage reports were implausible; the first one is logged, the rest only counted."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def note(self, counts: tuple) -> ImplausibleUsage:
        with self._lock:
            self.count += 1
            first = self.count == 1
        if first:
            _logger.warning("tokentrail: implausible token counts %s (more than %d in one call): recorded as "
                            "no_usage; further ones are only counted", counts, MAX_TOKENS_PER_CALL)
        try:
            telemetry.usage_implausible().add(1)
        except Exception:  # a metric must never turn bad usage into an error of the call
            _logger.debug("tokentrail: could not count implausible usage", exc_info=True)
        return ImplausibleUsage(f"token count beyond {MAX_TOKENS_PER_CALL}: {counts}")

    def reset(self) -> None:
        with self._lock:
            self.count = 0


_implausible = _Implausible()
register_reset(_implausible.reset)


def implausible_count() -> int:
    """Usage reports rejected as implausible since the start (or ``tokentrail.state.reset()``)."""
    return _implausible.count


@dataclass(slots=True)
class Usage:
    """Token counts of one call, upstream semantics: totals include their parts.

    ``input_tokens`` includes cache reads and cache writes; ``output_tokens`` includes
    reasoning. ``cache_write_tokens`` is all writes; ``cache_write_1h_tokens`` is the part of
    them written with a 1-hour lifetime. ``tool_calls`` counts billable server-side tools.
    A value: never changed once made (not frozen: a frozen dataclass costs a microsecond more
    to make, on every priced span).
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
        """``self`` when consistent; raises ``InvalidUsage`` (``ImplausibleUsage``, counted once
        here, for a count beyond ``MAX_TOKENS_PER_CALL``)."""
        return self._checked(count=True)

    def _checked(self, *, count: bool) -> "Usage":
        inp, out, read, write, write_1h, reasoning = (self.input_tokens, self.output_tokens, self.cache_read_tokens,
                                                      self.cache_write_tokens, self.cache_write_1h_tokens,
                                                      self.reasoning_tokens)
        # Consistent plain int counts (every call our instrumentations read) are told apart at
        # once; anything else gets the general checks below, and their exact error.
        if (not self.tool_calls and inp.__class__ is out.__class__ is read.__class__ is write.__class__
                is write_1h.__class__ is reasoning.__class__ is int
                and min(read, write_1h, reasoning) >= 0 and read + write <= inp <= MAX_TOKENS_PER_CALL
                and write_1h <= write and reasoning <= out <= MAX_TOKENS_PER_CALL):
            return self
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
        if any(n > MAX_TOKENS_PER_CALL for n in counts):
            if count:
                raise _implausible.note(counts)
            raise ImplausibleUsage(f"token count beyond {MAX_TOKENS_PER_CALL}: {counts}")
        _check_parts(self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens,
                     self.cache_write_1h_tokens, self.reasoning_tokens)
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
        get = attributes.get
        inp = get(_IN)
        out = get(_OUT)
        if inp is None and out is None:
            return None
        read = get(_READ, 0)
        write = get(_WRITE)
        if write is None:  # the older attribute name of cache writes
            write = get(_CREATION, 0)
        write_1h = get(_WRITE_1H, 0)
        reasoning = get(_REASONING, 0)
        raw_tools = get(_TOOLS)
        if inp is None:
            inp = 0
        if out is None:
            out = 0
        # Plain int counts (every span on the hot path) skip the conversions below.
        if not (inp.__class__ is out.__class__ is read.__class__ is write.__class__ is write_1h.__class__
                is reasoning.__class__ is int) or raw_tools:
            return _converted(cls, inp, out, read, write, write_1h, reasoning, raw_tools)
        if inp < 0 or out < 0 or read < 0 or write < 0 or write_1h < 0 or reasoning < 0:
            raise InvalidUsage("token counts must be non-negative integers")
        _check_parts(inp, out, read, write, write_1h, reasoning)
        # the parts are within their totals (checked above), so bounding the totals bounds them all;
        # not counted here: a span is read several times (pricing, metrics, ledger)
        if inp > MAX_TOKENS_PER_CALL or out > MAX_TOKENS_PER_CALL:
            raise ImplausibleUsage(f"token count beyond {MAX_TOKENS_PER_CALL}: input {inp}, output {out}")
        return cls(inp, out, read, write, write_1h, reasoning, _NO_TOOLS)


def _converted(cls: type[Usage], inp, out, read, write, write_1h, reasoning, raw_tools) -> Usage:
    tools: dict[str, int] = {}
    try:
        if raw_tools:
            for pair in str(raw_tools).split(","):
                name, _, count = pair.partition("=")
                tools[name.strip()] = int(count)
        usage = cls(_as_int(inp), _as_int(out), _as_int(read), _as_int(write), _as_int(write_1h),
                    _as_int(reasoning), tools)
    except (TypeError, ValueError) as exc:
        raise InvalidUsage(f"malformed usage attributes: {exc}") from exc
    return usage._checked(count=False)  # a span is read several times: its instrumentation counted


def _check_parts(inp: int, out: int, read: int, write: int, write_1h: int, reasoning: int) -> None:
    if read + write > inp:
        raise InvalidUsage(f"cache read {read} + cache write {write} exceed input {inp}")
    if write_1h > write:
        raise InvalidUsage("1-hour cache writes exceed all cache writes")
    if reasoning > out:
        raise InvalidUsage(f"reasoning {reasoning} exceeds output {out}")


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


# --------------------------------------------------------------------------------------------
# which spans are model calls
# --------------------------------------------------------------------------------------------
#: Operations of spans that wrap model calls (agents, tools): they may repeat their children's
#: usage, so they are never a call themselves.
WRAPPER_OPERATIONS = frozenset({"invoke_agent", "create_agent", "execute_tool"})
#: Operations that are exactly one model call.
CALL_OPERATIONS = frozenset({"chat", "text_completion", "completion", "generate_content", "embeddings", "embedding"})
_MARKERS = frozenset({
    attr.GEN_AI_OPERATION_NAME,
    attr.GEN_AI_PROVIDER_NAME,
    attr.GEN_AI_SYSTEM,
    attr.GEN_AI_REQUEST_MODEL,
    attr.GEN_AI_RESPONSE_MODEL,
    attr.GEN_AI_USAGE_INPUT_TOKENS,
    attr.GEN_AI_USAGE_OUTPUT_TOKENS,
})


def is_genai_call(attributes: Mapping[str, Any] | None, *, strict: bool = False) -> bool:
    """The one rule for "this span describes one model call" (chat, completion, embeddings...).

    A span with any GenAI attribute (operation, provider, model, usage) whose operation does
    not wrap calls (agents, tools). Holds at span start too (the provider and operation are
    known then, the usage is not). ``strict``: surely one call, for dropping a duplicate where
    a wrong yes loses a span: a known call operation, or with no operation name (older
    instrumentations) a provider and a model.
    """
    if not attributes:
        return False
    try:
        # One pass over the keys: most spans (HTTP, DB) have none of the markers, and a miss on
        # the SDK's attributes mapping costs a raised KeyError.
        if _MARKERS.isdisjoint(attributes):
            return False
        operation = attributes.get(_OPERATION)
        if operation is not None:
            return operation in CALL_OPERATIONS if strict else operation not in WRAPPER_OPERATIONS
        if strict:
            has_provider = _PROVIDER in attributes or _SYSTEM in attributes
            return has_provider and (_REQUEST_MODEL in attributes or _RESPONSE_MODEL in attributes)
        return True
    except Exception:  # a foreign attributes object misbehaving must not break the pipeline
        return False


def is_attributed(attributes: Mapping[str, Any]) -> bool:
    """``tokentrail.attributed``: the call has a tenant (unattributed spend stays visible)."""
    return bool(attributes.get(attr.TOKENTRAIL_TENANT))


# --------------------------------------------------------------------------------------------
# model ids
# --------------------------------------------------------------------------------------------
#: Bedrock cross-region inference-profile prefixes.
BEDROCK_REGIONS = frozenset({"us", "us-gov", "eu", "apac", "global", "jp", "au", "ca"})
#: Vendor prefixes of Bedrock model ids.
BEDROCK_VENDORS = frozenset({
    "anthropic", "openai", "google", "meta", "amazon", "mistral", "cohere", "ai21", "deepseek", "writer", "qwen",
    "moonshotai", "nvidia",
})
# Bedrock's version suffixes: "-v1:0", "-v2" and ":0" ("-v1" only after a vendor prefix: plain
# names such as deepseek-v3 end like that).
_BEDROCK_MODEL = re.compile(r"(?P<model>.+?)(?:-v\d+(?::\d+)?)?(?::\d+)?")
_COLON_VERSION = re.compile(r"(?P<model>.+?)(?:-v\d+)?:\d+")


def normalise_model_id(model: Any) -> str:
    """The model's own name, however an instrumentation or provider spells it ("" if none).

    Lower case, the last path segment (ARNs, ``models/gemini-2.5-pro``), without a Bedrock
    inference-profile region (``us.``, ``global.``...), vendor prefix (``anthropic.``,
    ``openai.``...) or version suffix (``-v1:0``, ``:0``): ``global.anthropic.claude-x-v1:0``,
    ``anthropic.claude-x-v1:0`` and ``claude-x-v1:0`` are all ``claude-x``.
    """
    if not isinstance(model, str):
        return ""
    name = model.strip().lower().rstrip("/").rsplit("/", 1)[-1]
    head, dot, rest = name.partition(".")
    if dot and head in BEDROCK_REGIONS and rest.partition(".")[0] in BEDROCK_VENDORS:
        head, dot, rest = rest.partition(".")
    if dot and head in BEDROCK_VENDORS and rest:
        return _BEDROCK_MODEL.fullmatch(rest).group("model")
    found = _COLON_VERSION.fullmatch(name)
    return found.group("model") if found else name


_NO_TOOLS: Mapping[str, int] = MappingProxyType({})
_IN = attr.GEN_AI_USAGE_INPUT_TOKENS
_OUT = attr.GEN_AI_USAGE_OUTPUT_TOKENS
_READ = attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
_WRITE = attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
_CREATION = attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
_WRITE_1H = attr.TOKENTRAIL_USAGE_CACHE_WRITE_1H_INPUT_TOKENS
_REASONING = attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
_TOOLS = attr.TOKENTRAIL_USAGE_TOOL_CALLS
_OPERATION = attr.GEN_AI_OPERATION_NAME
_PROVIDER = attr.GEN_AI_PROVIDER_NAME
_SYSTEM = attr.GEN_AI_SYSTEM
_REQUEST_MODEL = attr.GEN_AI_REQUEST_MODEL
_RESPONSE_MODEL = attr.GEN_AI_RESPONSE_MODEL
