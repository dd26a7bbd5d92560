"""Mistral usage -> ``Usage``: pure functions, no SDK import.

``UsageInfo``: ``prompt_tokens`` includes prompt-cache hits, reported (when any) as
``prompt_tokens_details.cached_tokens`` (an extra field the SDK keeps in ``model_extra``).
Mistral reports no cache writes and no separate reasoning count (Magistral's thinking is
inside ``completion_tokens``). A stream carries usage on its last chunk only.
"""

from __future__ import annotations

from typing import Any

from tokentrail.processor.usage import Usage


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name)
    return value


def _count(value: Any) -> int:
    if value is None or type(value).__name__ == "Unset":
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"token count {value!r} is not an integer")
    return value


def usage_from_info(info: Any) -> Usage | None:
    """The ``Usage`` of a ``UsageInfo`` (SDK object or dict); None when absent. Raises on malformed counts."""
    if info is None:
        return None
    prompt = _get(info, "prompt_tokens")
    completion = _get(info, "completion_tokens")
    if prompt is None and completion is None:
        return None
    details = _get(info, "prompt_tokens_details")
    return Usage(
        input_tokens=_count(prompt),
        output_tokens=_count(completion),
        cache_read_tokens=_count(_get(details, "cached_tokens")),
    )


def service_tier(info: Any) -> str | None:
    tier = _get(info, "service_tier")
    return tier if isinstance(tier, str) and tier else None


def finish_reasons(response: Any) -> list[str]:
    out = []
    for choice in _get(response, "choices") or ():
        reason = _get(choice, "finish_reason")
        if isinstance(reason, str):
            out.append(reason)
    return out


class StreamUsage:
    """Folds ``CompletionEvent``s: the usage block (last chunk), model, id and finish reasons."""

    __slots__ = ("info", "model", "response_id", "reasons")

    def __init__(self) -> None:
        self.info: Any = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.reasons: list[str] = []

    def add(self, event: Any) -> None:
        chunk = _get(event, "data") or event
        info = _get(chunk, "usage")
        if info is not None:
            self.info = info
        self.model = _get(chunk, "model") or self.model
        self.response_id = _get(chunk, "id") or self.response_id
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
