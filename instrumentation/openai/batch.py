"""OpenAI Batch API results, priced at the batch tier when they are read.

A batch's requests run on OpenAI's side; their usage only reaches the process that downloads
the output file (``client.files.content(batch.output_file_id)``). When that file is a batch
output (JSONL lines ``{"custom_id", "response": {"status_code", "body"}, "error"}``), each
succeeded result becomes one LLM span, priced at the ``batch`` tier (50% off), owned by
whoever reads it. The same result read twice in one process is priced once (bounded memory of
response ids); across processes, de-duplicate on ``gen_ai.response.id``. Results never read
are not costed. The read itself is not delayed by more than parsing the JSONL once.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tokentrail.instrumentation import genai_span
from tokentrail.instrumentation.base import Instruments
from tokentrail.instrumentation.openai import providers
from tokentrail.instrumentation.openai import streaming as results
from tokentrail.semconv import attributes as attr
from tokentrail.state import BoundedSet

_log = logging.getLogger(__name__)

BATCH_TIER = "batch"
# Response ids already priced in this process (oldest forgotten past the capacity).
_seen: BoundedSet[str] = BoundedSet(100_000)


def looks_like_batch_output(data: bytes) -> bool:
    head = data[:4096]
    return head[:1] == b"{" and b'"custom_id"' in head and b'"response"' in head


def _kind(body: dict[str, Any]) -> str | None:
    obj = body.get("object")
    if obj == "chat.completion":
        return "chat"
    if obj == "response":
        return "responses"
    if obj == "list" and isinstance(body.get("data"), list):
        return "embeddings"
    return None


def record_batch_output(instruments: Instruments, client: Any, data: bytes) -> int:
    """One priced span per succeeded, not yet seen result in ``data``; returns how many."""
    if not looks_like_batch_output(data):
        return 0
    endpoint = providers.detect(getattr(client, "base_url", None))
    count = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            result = json.loads(line)
            response = result.get("response") or {}
            body = response.get("body")
            if response.get("status_code") != 200 or not isinstance(body, dict):
                continue
            kind = _kind(body)
            key = str(body.get("id") or f"{result.get('id')}/{result.get('custom_id')}")
            if kind is None or not _seen.add(key):
                continue
            _record_one(instruments, endpoint, kind, body)
            count += 1
        except Exception:
            _log.debug("tokentrail: could not record a batch result", exc_info=True)
    return count


def _record_one(instruments: Instruments, endpoint: providers.Endpoint, kind: str, body: dict[str, Any]) -> None:
    model = body.get("model") if isinstance(body.get("model"), str) else None
    call = genai_span.start_llm_call(
        instruments,
        provider=endpoint.provider,
        operation="embeddings" if kind == "embeddings" else "chat",
        request_model=model,
        server_address=endpoint.server_address,
        server_port=endpoint.server_port,
        service_tier=BATCH_TIER,
        check_budget=False,  # already paid for: stopping the read would save nothing
    )
    if kind == "chat":
        results.record_chat(call, body)
    elif kind == "responses":
        results.record_response(call, body)
    else:
        results.record_embeddings(call, body)
    call.set(attr.TOKENTRAIL_SERVICE_TIER, BATCH_TIER)  # the body says "default"; it ran as batch
    call.end()


def _observe_download(instruments: Instruments, instance: Any, args: tuple, kwargs: dict, result: Any) -> Any:
    data = result.content  # already read: files.content is not a streamed request
    if isinstance(data, (bytes, bytearray)):
        record_batch_output(instruments, getattr(instance, "_client", None), bytes(data))
    return result


def files_content_wrapper(is_async: bool = False):
    """Wraps ``Files.content``: the caller gets the SDK's result untouched."""
    return lambda instruments: genai_span.result_wrapper(instruments, _observe_download, is_async=is_async)
