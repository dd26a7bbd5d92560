"""Hostile input on the stream side: stalled servers, floods of hidden chunks, usage-only chunks
the caller would have seen, servers that reject the injected ``stream_options``, and (Anthropic)
the trace context on the wire and partial stream usage. Real SDKs over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import openai
import pytest

from tokentrail.semconv import attributes as attr
from tokentrail.testing import InMemoryPipeline
from tokentrail.testing.faults import FaultServer, json_reply, sse_reply

from helpers import usd

NO_USAGE = "no_usage"
MESSAGES = [{"role": "user", "content": "Summarise the quarterly report for me."}]
USAGE = {"prompt_tokens": 2000, "completion_tokens": 500, "total_tokens": 2500}


def chunk(choices, **extra):
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
            "choices": choices, **extra}


def delta(text=None, finish=None):
    return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}


CONTENT = [chunk([delta("Hello")]), chunk([delta(" world")]), chunk([delta(finish="stop")])]
USAGE_CHUNK = chunk([], usage=USAGE)


def sse(events) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


class StallingServer:
    """Sends an SSE head and ``before``, then holds the connection until ``release`` (or
    ``stall_s``), then sends ``after`` and closes. ``timed_out``: nobody released it in time."""

    def __init__(self, before: bytes, after: bytes, stall_s: float = 5.0) -> None:
        self.before, self.after, self.stall_s = before, after, stall_s
        self.release = threading.Event()
        self.timed_out = False
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d/v1" % self._sock.getsockname()[1]

    def __enter__(self) -> "StallingServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._sock.close()
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                             + self.before)
                self.timed_out = not self.release.wait(self.stall_s)
                conn.sendall(self.after)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass


@pytest.fixture
def openai_pipeline(make_pipeline) -> InMemoryPipeline:
    from tokentrail.instrumentation.openai import OpenAIInstrumentor

    return make_pipeline(instrument=[OpenAIInstrumentor()])


def only_span(pipeline):
    spans = pipeline.llm_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def bare(pipeline, fn):
    """``fn()`` with the openai SDK not instrumented: what the caller sees without tokentrail."""
    from tokentrail.instrumentation.openai import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    instrumentor.uninstrument()
    try:
        return fn()
    finally:
        instrumentor.instrument(tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider)


# --- issue 14.3: closing a stream never waits for the injected usage chunk ---------------------
def test_close_after_the_final_chunk_returns_while_the_server_stalls(openai_pipeline):
    with StallingServer(sse(CONTENT), sse([USAGE_CHUNK]) + b"data: [DONE]\n\n") as server:
        with openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0, timeout=30) as client:
            with client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True) as stream:
                for item in stream:
                    if item.choices[0].finish_reason:
                        break
            stalled_through_close = not server.release.is_set() and not server.timed_out
            server.release.set()

    assert stalled_through_close  # close() did not read on until the server gave up stalling
    span = only_span(openai_pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == NO_USAGE
    assert tuple(span.attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS]) == ("stop",)
    assert attr.ERROR_TYPE not in span.attributes


def test_async_close_after_the_final_chunk_returns_while_the_server_stalls(openai_pipeline):
    async def run(server):
        client = openai.AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0, timeout=30)
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        async for item in stream:
            if item.choices[0].finish_reason:
                break
        await stream.close()
        stalled = not server.release.is_set() and not server.timed_out
        server.release.set()
        await client.close()
        return stalled

    with StallingServer(sse(CONTENT), sse([USAGE_CHUNK]) + b"data: [DONE]\n\n") as server:
        assert asyncio.run(run(server))
    assert only_span(openai_pipeline).attributes[attr.TOKENTRAIL_COST_STATUS] == NO_USAGE


# --- issue 14.4: any number of hidden chunks in a row --------------------------------------------
def test_thousands_of_hidden_usage_chunks_reach_no_recursion_error(openai_pipeline):
    flood = [chunk([delta("Hello")])] + [USAGE_CHUNK] * 3000 + [chunk([delta(finish="stop")])]
    with FaultServer() as server:
        server.script(sse_reply(flood))
        with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0) as client:
            seen = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))

    assert [c.choices[0].finish_reason for c in seen] == [None, "stop"]
    span = only_span(openai_pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 2000
    assert span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 500


# --- issue 14.9: a usage-only chunk the caller would have seen is shown -------------------------
MODERATION_CHUNK = chunk([], usage=USAGE, moderation={"flagged": False, "categories": {}, "category_scores": {}})


def test_a_usage_only_chunk_carrying_more_is_shown_as_the_bare_sdk_shows_it(openai_pipeline):
    def run():
        with FaultServer() as server:
            server.script(sse_reply(CONTENT + [MODERATION_CHUNK]))
            with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0) as client:
                return [c.model_dump() for c in client.chat.completions.create(
                    model="gpt-4o", messages=MESSAGES, stream=True)]

    baseline = bare(openai_pipeline, run)
    assert run() == baseline and baseline[-1]["moderation"] is not None
    assert only_span(openai_pipeline).attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 2000


@pytest.mark.parametrize("is_async", [False, True])
def test_the_stream_helpers_final_completion_keeps_the_servers_usage(openai_pipeline, is_async):
    def run():
        with FaultServer() as server:
            server.script(sse_reply(CONTENT + [USAGE_CHUNK]))  # sent whether asked for or not
            url = server.url + "/v1"
            if not is_async:
                with openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0) as client:
                    with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
                        return stream.get_final_completion().usage

            async def arun():
                client = openai.AsyncOpenAI(base_url=url, api_key="sk-test", max_retries=0)
                async with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
                    final = await stream.get_final_completion()
                await client.close()
                return final.usage

            return asyncio.run(arun())

    baseline = bare(openai_pipeline, run)
    assert baseline is not None and baseline.prompt_tokens == 2000
    assert run() == baseline
    assert only_span(openai_pipeline).attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 500


def test_the_injected_usage_chunk_alone_is_still_hidden(openai_pipeline):
    with FaultServer() as server:
        server.script(sse_reply(CONTENT + [USAGE_CHUNK]))
        with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0) as client:
            seen = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert json.loads(server.requests[-1].partition(b"\r\n\r\n")[2])["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in seen)
    assert usd(only_span(openai_pipeline)) * 10**4 == 100  # $0.0100: 2000 in, 500 out at gpt-4o


# --- issue 14.8: Anthropic requests keep their trace context ------------------------------------
@pytest.fixture
def anthropic_pipeline(make_pipeline) -> InMemoryPipeline:
    from tokentrail.instrumentation.anthropic import AnthropicInstrumentor

    return make_pipeline(instrument=[AnthropicInstrumentor()])


def _with_baggage(fn):
    from opentelemetry import baggage, context

    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        return fn()
    finally:
        context.detach(token)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages_carry_traceparent_and_baggage(anthropic_pipeline, server, stream):
    import anthropic

    provider = anthropic_pipeline.tracer_provider
    with anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0,
                             open_telemetry={"tracer_provider": provider}) as client:
        def call():
            with anthropic_pipeline.tracer().start_as_current_span("handler"):
                result = client.messages.create(model="claude-sonnet-4-20250514", max_tokens=64, messages=MESSAGES,
                                                stream=stream)
                if stream:
                    list(result)

        _with_baggage(call)
    headers = server.requests[-1].headers
    (ours,) = anthropic_pipeline.llm_spans()
    assert headers["traceparent"].startswith("00-%032x-%016x-" % (ours.context.trace_id, ours.context.span_id))
    assert headers["baggage"] == "tenant=acme"
    assert [s.name for s in anthropic_pipeline.spans() if s.name.startswith("anthropic.")] == []  # no duplicate


def test_anthropic_client_with_its_own_tracer_provider_keeps_its_messages_spans(anthropic_pipeline, server):
    import anthropic
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    theirs = TracerProvider()
    theirs.add_span_processor(SimpleSpanProcessor(exporter))
    with anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0,
                             open_telemetry={"tracer_provider": theirs}) as client:
        client.messages.create(model="claude-sonnet-4-20250514", max_tokens=64, messages=MESSAGES)

    [native] = exporter.get_finished_spans()
    assert native.name == "anthropic.messages.create"
    # their span records the URL as the SDK does (tokentrail skips that only for its stand-in span)
    assert native.attributes["url.full"] == f"{server.url}/v1/messages" and native.attributes["url.path"] == "/v1/messages"
    (ours,) = anthropic_pipeline.llm_spans()
    assert ours.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] > 0


# --- a strict OpenAI-compatible server rejects the injected stream_options -----------------------
REJECTION = json_reply({"error": {"message": "Unrecognized request argument supplied: stream_options",
                                  "type": "invalid_request_error", "param": None, "code": None}}, status=400)


def _sent(request: bytes) -> dict:
    return json.loads(request.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize("is_async", [False, True])
def test_a_rejected_stream_options_injection_is_retried_once_without_it_and_remembered(openai_pipeline, is_async):
    with FaultServer() as server:
        server.script(REJECTION, sse_reply(CONTENT + [USAGE_CHUNK]))
        url = server.url + "/v1"

        def call():
            if not is_async:
                with openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0) as client:
                    return [c.model_dump() for c in client.chat.completions.create(
                        model="gpt-4o", messages=MESSAGES, stream=True)]

            async def arun():
                client = openai.AsyncOpenAI(base_url=url, api_key="sk-test", max_retries=0)
                stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
                seen = [c.model_dump() async for c in stream]
                await client.close()
                return seen

            return asyncio.run(arun())

        first = call()
        second = call()
        sent = [_sent(r) for r in server.requests]

    assert [("stream_options" in body) for body in sent] == [True, False, False]  # one retry, then remembered
    assert first == second and len(first) == 4 and first[-1]["usage"]["prompt_tokens"] == 2000  # the server's own
    spans = openai_pipeline.llm_spans()
    assert len(spans) == 2 and all(attr.ERROR_TYPE not in s.attributes for s in spans)
    assert [usd(s) * 10**4 for s in spans] == [100, 100]


def test_a_caller_who_asked_for_stream_options_gets_the_servers_error_unchanged(openai_pipeline):
    with FaultServer() as server:
        server.script(REJECTION)
        with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0) as client:
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                               stream_options={"include_usage": True})
        assert len(server.requests) == 1


# --- an Anthropic stream cut or abandoned mid-way is marked partial -------------------------------
def _anthropic_stream(anthropic_pipeline, server, events_read):
    import anthropic
    from tokentrail.testing import anthropic_api
    from tokentrail.testing.server import FakeResponse

    server.enqueue(FakeResponse(sse=anthropic_api.message_events(usage=anthropic_api.usage_block(8000, 1200))))
    with anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0) as client:
        stream = client.messages.create(model="claude-sonnet-4-20250514", max_tokens=2000, messages=MESSAGES,
                                        stream=True)
        for _ in range(events_read):
            next(stream)
        stream.close()
    return only_span(anthropic_pipeline)


def test_an_anthropic_stream_closed_mid_way_is_priced_as_partial(anthropic_pipeline, server):
    span = _anthropic_stream(anthropic_pipeline, server, events_read=3)
    assert span.attributes[attr.TOKENTRAIL_USAGE_PARTIAL] is True
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 8000  # exact: message_start's
    assert span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 1  # message_start's placeholder
    assert usd(span) * 10**6 == 24015  # 8,000 in at $3/M + 1 out at $15/M = $0.024015


def test_a_whole_anthropic_stream_is_not_partial(anthropic_pipeline, server):
    span = _anthropic_stream(anthropic_pipeline, server, events_read=0)
    assert attr.TOKENTRAIL_USAGE_PARTIAL not in span.attributes  # closed before message_start: no usage at all
    anthropic_pipeline.clear()
    import anthropic
    from tokentrail.testing import anthropic_api
    from tokentrail.testing.server import FakeResponse

    server.enqueue(FakeResponse(sse=anthropic_api.message_events(usage=anthropic_api.usage_block(8000, 1200))))
    with anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0) as client:
        list(client.messages.create(model="claude-sonnet-4-20250514", max_tokens=2000, messages=MESSAGES, stream=True))
    span = only_span(anthropic_pipeline)
    assert attr.TOKENTRAIL_USAGE_PARTIAL not in span.attributes
    assert usd(span) * 1000 == 42  # $0.042


def test_a_usage_only_chunk_with_an_explicit_null_field_is_the_servers_own_and_shown(openai_pipeline):
    # the openai SDK's recorded moderation fixtures: the last chunk has usage and "moderation": null
    events = CONTENT + [chunk([], usage=USAGE, moderation=None)]

    def run():
        with FaultServer() as server:
            server.script(sse_reply(events))
            with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0) as client:
                return [c.model_dump() for c in client.chat.completions.create(
                    model="gpt-4o", messages=MESSAGES, stream=True)]

    baseline = bare(openai_pipeline, run)
    assert run() == baseline and len(baseline) == 4
