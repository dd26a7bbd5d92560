"""Anthropic usage normalisation: the pure functions, on the SDK's own types and raw JSON."""

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from tokentrail.instrumentation.anthropic.usage import MessageStreamState, usage_from_anthropic
from tokentrail.processor.usage import InvalidUsage, Usage
from tokentrail.testing import anthropic_api as fake

EVENTS = TypeAdapter(RawMessageStreamEvent)


def test_input_includes_cache_read_and_write_split_5m_1h():
    block = fake.usage_block(1000, 200, cache_read_input_tokens=6000, cache_creation_5m=300, cache_creation_1h=700)
    usage = usage_from_anthropic(Message.model_validate(fake.message(usage=block)).usage)
    assert usage == Usage(input_tokens=8000, output_tokens=200, cache_read_tokens=6000,
                          cache_write_tokens=1000, cache_write_1h_tokens=700)
    assert usage.uncached_input_tokens == 1000 and usage.cache_write_5m_tokens == 300


def test_web_search_requests_become_tool_calls_and_thinking_is_reasoning():
    block = fake.usage_block(500, 900, web_search_requests=3, thinking_tokens=400)
    usage = usage_from_anthropic(block)
    assert usage.tool_calls == {"web_search": 3}
    assert usage.reasoning_tokens == 400 and usage.output_tokens == 900


def test_cache_breakdown_without_total_and_total_without_breakdown():
    assert usage_from_anthropic({"input_tokens": 1, "output_tokens": 1,
                                 "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 3}}
                                ).cache_write_tokens == 5
    old = usage_from_anthropic({"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 4})
    assert old.cache_write_tokens == 4 and old.cache_write_1h_tokens == 0 and old.input_tokens == 5


def test_no_usage_block_is_none():
    assert usage_from_anthropic(None) is None
    assert usage_from_anthropic({}) is None


@pytest.mark.parametrize("bad", ["lots", {"input_tokens": "twelve", "output_tokens": 1},
                                 {"input_tokens": 12, "output_tokens": True},
                                 {"input_tokens": 1, "output_tokens": 1, "cache_creation": "5m"},
                                 {"input_tokens": -1, "output_tokens": 1},
                                 {"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 1,
                                  "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 5}}])
def test_malformed_usage_is_rejected_not_crashing(bad):
    with pytest.raises(InvalidUsage):
        usage_from_anthropic(bad)


def test_stream_usage_takes_message_start_and_message_delta():
    block = fake.usage_block(1000, 321, cache_read_input_tokens=50, cache_creation_1h=70, web_search_requests=1)
    state = MessageStreamState()
    for event, data in fake.message_events(usage=block, content=[*fake.web_search_blocks("q"), fake.text_block("hi")]):
        if event != "ping":  # the SDK drops pings; every other event must validate against its types
            state.add(EVENTS.validate_python(data))
    assert state.usage() == usage_from_anthropic(block)
    assert state.stop_reason == "end_turn" and state.model == fake.DEFAULT_MODEL


def test_message_delta_updates_input_counts():
    state = MessageStreamState()
    state.add({"type": "message_start", "message": {"id": "m", "model": "x", "usage": {
        "input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 0}}})
    state.add({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                   "usage": {"output_tokens": 40, "input_tokens": 12, "cache_read_input_tokens": 5}})
    assert state.usage() == Usage(input_tokens=17, output_tokens=40, cache_read_tokens=5)


def test_stream_cut_before_message_delta_keeps_input_side():
    state = MessageStreamState()
    assert state.usage() is None
    for _, data in fake.message_events(usage=fake.usage_block(900, 50))[:3]:
        state.add(data)
    assert state.usage().input_tokens == 900
