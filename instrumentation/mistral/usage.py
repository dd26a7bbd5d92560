"""Mistral usage -> ``Usage``: pure functions, no SDK import.

``UsageInfo``: ``prompt_tokens`` includes prompt-cache hits, reported (when any) as
``prompt_tokens_details.cached_tokens`` (an extra field the SDK keeps in ``model_extra``).
Mistral reports no cache writes and no separate reasoning count (Magistral's thinking is
inside ``completion_tokens``). A stream carries usage on its last chunk only.
"""

from __future__ import annotations

from typing import Any

from tokentrail.instrumentation.fields import block, count, field, items, reported
from tokentrail.instrumentation.streams import StreamState
from tokentrail.processor.usage import Usage


def usage_from_info(info: Any) -> Usage | None:
    """The ``Usage`` of a ``UsageInfo`` (SDK object or dict); None when absent. Raises ``InvalidUsage``."""
    found = reported(info, "prompt_tokens", "completion_tokens")
    if found is None:
        return None
    prompt, completion = found
    return Usage(
        input_tokens=count(prompt),
        output_tokens=count(completion),
        cache_read_tokens=count(field(block(info, "prompt_tokens_details"), "cached_tokens")),
    ).validate()


def service_tier(info: Any) -> str | None:
    tier = field(info, "service_tier")
    return tier if isinstance(tier, str) and tier else None


def finish_reasons(response: Any) -> list[str]:
    return [reason for reason in (field(c, "finish_reason") for c in items(response, "choices"))
            if isinstance(reason, str)]


def response_facts(response: Any) -> dict[str, Any]:
    """``LLMCall.set_response`` arguments of a ``ChatCompletionResponse`` or a stream chunk."""
    return {
        "model": field(response, "model"),
        "response_id": field(response, "id"),
        "finish_reasons": finish_reasons(response),
        "service_tier": service_tier(field(response, "usage")),
    }


class ChatStreamState(StreamState):
    """Folds ``CompletionEvent``s: the usage block (last chunk), model, id and finish reasons."""

    __slots__ = ("info", "model", "response_id", "reasons")

    def __init__(self) -> None:
        self.info: Any = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.reasons: list[str] = []

    def add(self, event: Any) -> None:
        chunk = field(event, "data") or event
        info = field(chunk, "usage")
        if info is not None:
            self.info = info
        self.model = field(chunk, "model") or self.model
        self.response_id = field(chunk, "id") or self.response_id
        self.reasons = finish_reasons(chunk) or self.reasons

    def response(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "response_id": self.response_id,
            "finish_reasons": self.reasons,
            "service_tier": service_tier(self.info),
        }

    def usage(self) -> Usage | None:
        return usage_from_info(self.info)
