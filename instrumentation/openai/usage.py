"""Pure translation of OpenAI(-compatible) usage blocks into the normalised ``Usage``.

Works on the SDK's pydantic objects and on plain dicts alike (raw responses, tests).
Every function returns ``None`` for a missing or malformed block (strings, negatives,
parts larger than their totals): the call is then recorded as ``no_usage``, never a crash.

Shapes handled:
- Chat Completions: ``prompt_tokens`` (includes cached), ``completion_tokens`` (includes
  reasoning), ``prompt_tokens_details.cached_tokens`` / ``.cache_write_tokens``,
  ``completion_tokens_details.reasoning_tokens``.
- DeepSeek: ``prompt_cache_hit_tokens`` (cache read) + ``prompt_cache_miss_tokens``.
- xAI: ``completion_tokens_details.reasoning_tokens`` is *beside* ``completion_tokens``
  (``total_tokens`` = prompt + completion + reasoning) and billed as output: added to output.
- Responses: ``input_tokens``, ``output_tokens``, ``input_tokens_details.cached_tokens`` /
  ``.cache_write_tokens``, ``output_tokens_details.reasoning_tokens``; billable web searches
  from ``tool_usage.web_search.num_requests`` (else the ``web_search_call`` output items).
- Embeddings: ``prompt_tokens`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tokentrail.processor.usage import InvalidUsage, Usage

_log = logging.getLogger(__name__)


class _Malformed(ValueError):
    pass


_NO_EXTRA = object()


def field(obj: Any, name: str) -> Any:
    """``obj.name`` for SDK models (declared or extra fields) or ``obj[name]`` for mappings.

    Runs a dozen times per call, often for absent names (DeepSeek's and Groq's extras): a
    pydantic model answers those from its dicts, without the costly AttributeError that
    ``getattr(model, name, None)`` raises and swallows inside pydantic.
    """
    if obj is None:
        return None
    if type(obj) is dict:
        return obj.get(name)
    fields = getattr(obj, "__dict__", None)
    if fields is not None and name in fields:
        return fields[name]
    extra = getattr(obj, "__pydantic_extra__", _NO_EXTRA)
    if extra is not _NO_EXTRA:  # a pydantic model: declared fields are in __dict__
        return extra.get(name) if extra else None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _details(obj: Any, name: str) -> Any:
    """A nested details block: absent, or an object/mapping (anything else is malformed)."""
    value = field(obj, name)
    if value is not None and isinstance(value, (str, bytes, int, float, list, tuple)):
        raise _Malformed(f"{name} is not an object: {value!r}")
    return value


def _count(value: Any, *, required: bool = False) -> int:
    if value is None:
        if required:
            raise _Malformed("missing token count")
        return 0
    if isinstance(value, bool):
        raise _Malformed(f"boolean token count {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise _Malformed(f"bad token count {value!r}")
    return value


def _checked(build: Any, *args: Any) -> Usage | None:
    if isinstance(args[0], (str, bytes, int, float, list, tuple)):
        return None
    try:
        return build(*args).validate()
    except (_Malformed, InvalidUsage, TypeError, ValueError) as exc:
        _log.debug("tokentrail: malformed OpenAI usage: %s", exc)
        return None


def chat_usage(usage: Any) -> Usage | None:
    """Usage of a chat completion (or of the final streamed chunk)."""
    if usage is None:
        return None
    return _checked(_chat, usage)


def _chat(usage: Any) -> Usage:
    hit = field(usage, "prompt_cache_hit_tokens")  # DeepSeek
    miss = field(usage, "prompt_cache_miss_tokens")
    prompt = field(usage, "prompt_tokens")
    if prompt is None and hit is not None and miss is not None:
        prompt = _count(hit) + _count(miss)
    prompt_details = _details(usage, "prompt_tokens_details")
    completion_details = _details(usage, "completion_tokens_details")
    cached = _count(field(prompt_details, "cached_tokens"))
    if hit is not None:
        cached = _count(hit)
    input_tokens = _count(prompt, required=True)
    output_tokens = _count(field(usage, "completion_tokens"), required=True)
    reasoning = _count(field(completion_details, "reasoning_tokens"))
    if reasoning and _reasoning_beside_completion(input_tokens, output_tokens, reasoning, field(usage, "total_tokens")):
        output_tokens += reasoning  # xAI: reasoning is reported beside completion, billed as output
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cached,
        cache_write_tokens=_count(field(prompt_details, "cache_write_tokens")),
        reasoning_tokens=reasoning,
    )


def _reasoning_beside_completion(prompt: int, completion: int, reasoning: int, total: Any) -> bool:
    """True when ``completion_tokens`` excludes reasoning (xAI), which only the total can tell:
    OpenAI's total is prompt + completion (reasoning inside); xAI's adds reasoning on top."""
    if isinstance(total, int) and not isinstance(total, bool):
        return total == prompt + completion + reasoning
    return False


def responses_usage(response: Any) -> Usage | None:
    """Usage of a Responses API ``Response`` (non-streamed, or from a terminal stream event)."""
    usage = field(response, "usage")
    if usage is None:
        return None
    return _checked(_responses, usage, response)


def _responses(usage: Any, response: Any) -> Usage:
    input_details = _details(usage, "input_tokens_details")
    output_details = _details(usage, "output_tokens_details")
    return Usage(
        input_tokens=_count(field(usage, "input_tokens"), required=True),
        output_tokens=_count(field(usage, "output_tokens"), required=True),
        cache_read_tokens=_count(field(input_details, "cached_tokens")),
        cache_write_tokens=_count(field(input_details, "cache_write_tokens")),
        reasoning_tokens=_count(field(output_details, "reasoning_tokens")),
        tool_calls=_response_tool_calls(response),
    )


def _response_tool_calls(response: Any) -> dict[str, int]:
    searches = field(field(field(response, "tool_usage"), "web_search"), "num_requests")
    if searches is None:
        output = field(response, "output") or ()
        searches = sum(1 for item in output if field(item, "type") == "web_search_call")
    count = _count(searches)
    return {"web_search": count} if count else {}


def embeddings_usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    return _checked(_embeddings, usage)


def _embeddings(usage: Any) -> Usage:
    return Usage(input_tokens=_count(field(usage, "prompt_tokens"), required=True), output_tokens=0)
