"""OpenAI Batch API results are priced at the batch tier when the output file is read."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokentrail.semconv import attributes as attr
from tokentrail.testing import FakeResponse, openai_api

from helpers import usd


def _output(*results):
    return FakeResponse(body=openai_api.batch_output(list(results)), content_type="application/octet-stream")


def test_batch_results_are_priced_at_the_batch_tier_once(pipeline, client, server):
    # GPT-4o at $2.50 / $10 per M, batch 50% off: 2,000 in / 500 out -> $0.0050 (not $0.0100)
    server.enqueue(_output(
        ("a", openai_api.Reply(prompt_tokens=2000, completion_tokens=500), "gpt-4o"),
        ("b", openai_api.Reply(status=400), "gpt-4o"),
        ("c", openai_api.Reply(prompt_tokens=2000, completion_tokens=500), "gpt-4o"),
    ))
    content = client.files.content("file-batch-out")
    lines = content.text.splitlines()
    assert len(lines) == 3  # the caller reads the file exactly as the SDK returned it

    spans = pipeline.llm_spans()
    assert len(spans) == 2  # the failed request is not billed
    for span in spans:
        assert span.attributes[attr.TOKENTRAIL_SERVICE_TIER] == "batch"
        assert usd(span) == Decimal("0.0050")
        assert span.attributes[attr.GEN_AI_RESPONSE_ID].startswith("chatcmpl-batch")

    # the same results read again are not priced twice
    server.enqueue(_output(("a", openai_api.Reply(prompt_tokens=2000, completion_tokens=500), "gpt-4o")))
    client.files.content("file-batch-out")
    assert len(pipeline.llm_spans()) == 2


def test_state_reset_forgets_the_results_already_priced(pipeline, client, server):
    from tokentrail import state

    result = ("a", openai_api.Reply(prompt_tokens=2000, completion_tokens=500), "gpt-4o")
    server.enqueue(_output(result), _output(result))
    client.files.content("file-batch-out")
    state.reset()  # a fresh start: the same result read again is priced again
    client.files.content("file-batch-out")
    assert [usd(span) for span in pipeline.llm_spans()] == [Decimal("0.0050")] * 2


async def test_async_batch_results(pipeline, aclient, server):
    server.enqueue(_output(("z", openai_api.Reply(prompt_tokens=1_000_000, completion_tokens=0), "gpt-4o-mini")))
    await aclient.files.content("file-async")
    [span] = pipeline.llm_spans()
    assert usd(span) == Decimal("0.075")  # gpt-4o-mini $0.15 per M input, batch half


def test_other_files_are_left_alone(pipeline, client, server):
    server.enqueue(FakeResponse(body=b'{"messages": [{"role": "user", "content": "fine-tune row"}]}\n'))
    assert client.files.content("file-training").content.startswith(b'{"messages"')
    assert pipeline.llm_spans() == []
