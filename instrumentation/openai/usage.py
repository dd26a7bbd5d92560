"""Pure translation of OpenAI(-compatible) usage blocks into the normalised ``Usage``.

Works on the SDK's pydantic objects and on plain dicts alike (raw responses, tests).
Every function returns ``None`` for a missing block and raises ``InvalidUsage`` for a
malformed one (the call is then recorded as ``no_usage``); OpenAI always sends both the
input and the output count, so a block missing either is malformed.

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

from typing import Any

from tokentrail.instrumentation.fields import as_block, block, count, field, items, reader, validated
from tokentrail.processor.usage import Usage


@validated
def chat_usage(usage: Any) -> Usage | None:
    """Usage of a chat completion (or of the final streamed chunk)."""
    usage = as_block(usage)
    if usage is None:
        return None
    get = reader(usage)
    hit = get("prompt_cache_hit_tokens")  # DeepSeek
    miss = get("prompt_cache_miss_tokens")
    prompt = get("prompt_tokens")
    if prompt is None and hit is not None and miss is not None:
        prompt = count(hit) + count(miss)
    prompt_details = as_block(get("prompt_tokens_details"), "prompt_tokens_details")
    input_tokens = count(prompt, required=True)
    output_tokens = count(get("completion_tokens"), required=True)
    completion_details = as_block(get("completion_tokens_details"), "completion_tokens_details")
    reasoning = count(field(completion_details, "reasoning_tokens"))
    if reasoning and _reasoning_beside_completion(input_tokens, output_tokens, reasoning, get("total_tokens")):
        output_tokens += reasoning  # xAI: reasoning is reported beside completion, billed as output
    details = reader(prompt_details)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=count(hit if hit is not None else details("cached_tokens")),
        cache_write_tokens=count(details("cache_write_tokens")),
        reasoning_tokens=reasoning,
    ).validate()


def _reasoning_beside_completion(prompt: int, completion: int, reasoning: int, total: Any) -> bool:
    """True when ``completion_tokens`` excludes reasoning (xAI), which only the total can tell:
    OpenAI's total is prompt + completion (reasoning inside); xAI's adds reasoning on top."""
    if isinstance(total, int) and not isinstance(total, bool):
        return total == prompt + completion + reasoning
    return False


@validated
def responses_usage(response: Any) -> Usage | None:
    """Usage of a Responses API ``Response`` (non-streamed, or from a terminal stream event)."""
    usage = block(response, "usage")
    if usage is None:
        return None
    input_details = block(usage, "input_tokens_details")
    return Usage(
        input_tokens=count(field(usage, "input_tokens"), required=True),
        output_tokens=count(field(usage, "output_tokens"), required=True),
        cache_read_tokens=count(field(input_details, "cached_tokens")),
        cache_write_tokens=count(field(input_details, "cache_write_tokens")),
        reasoning_tokens=count(field(block(usage, "output_tokens_details"), "reasoning_tokens")),
        tool_calls=_response_tool_calls(response),
    ).validate()


def _response_tool_calls(response: Any) -> dict[str, int]:
    searches = field(field(field(response, "tool_usage"), "web_search"), "num_requests")
    if searches is None:
        searches = sum(1 for item in items(response, "output") if field(item, "type") == "web_search_call")
    searches = count(searches)
    return {"web_search": searches} if searches else {}


@validated
def embeddings_usage(usage: Any) -> Usage | None:
    usage = block(usage)
    if usage is None:
        return None
    return Usage(input_tokens=count(field(usage, "prompt_tokens"), required=True), output_tokens=0).validate()
