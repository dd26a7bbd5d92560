"""The per-call path's shortcuts in the instrumentation behave as what they replace.

``should_skip`` reads the suppression keys from one lookup of the context (it used to ask
``is_instrumentation_enabled``); the SDKs' ``_build_request`` is replaced by a plain method
(not a wrapt wrapper), and so are anthropic's ``APIResponse.parse`` and
``start_api_call_span``: ``uninstrument()`` must take each away again exactly.
"""

from __future__ import annotations

import inspect

import anthropic._base_client
import anthropic._response
import openai._base_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_instrumentation

from tokentrail.instrumentation.anthropic import AnthropicInstrumentor
from tokentrail.instrumentation.genai_span import should_skip
from tokentrail.instrumentation.openai import OpenAIInstrumentor


def test_should_skip_follows_every_suppression():
    assert should_skip() is (not is_instrumentation_enabled()) is False
    with suppress_instrumentation():
        assert should_skip() is (not is_instrumentation_enabled()) is True
    token = otel_context.attach(otel_context.set_value("suppress_instrumentation", True))  # the older plain key
    try:
        assert should_skip() is (not is_instrumentation_enabled()) is True
    finally:
        otel_context.detach(token)
    assert should_skip() is False


@pytest.mark.parametrize("instrumentor, owner, name", [
    (OpenAIInstrumentor, openai._base_client.BaseClient, "_build_request"),
    (AnthropicInstrumentor, anthropic._base_client.BaseClient, "_build_request"),
    (AnthropicInstrumentor, anthropic._response.APIResponse, "parse"),
    (AnthropicInstrumentor, anthropic._response.AsyncAPIResponse, "parse"),
    (AnthropicInstrumentor, anthropic._base_client, "start_api_call_span"),
])
def test_the_plain_method_patches_are_undone_exactly(instrumentor, owner, name):
    inst = instrumentor()
    if inst.is_instrumented_by_opentelemetry:
        pytest.skip("instrumented by an earlier test")
    original = vars(owner)[name]
    inst.instrument(skip_dep_check=True)
    try:
        patched = vars(owner)[name]
        assert patched is not original and patched.__wrapped__ is original
        assert inspect.iscoroutinefunction(patched) is inspect.iscoroutinefunction(original)
    finally:
        inst.uninstrument()
    assert vars(owner)[name] is original


def test_the_sdk_call_runs_in_our_span_with_openllmetry_suppressed(pipeline, server):
    import httpx
    import openai
    from opentelemetry import trace

    from tokentrail.testing import openai_api

    seen = []

    def hook(request):  # runs inside the SDK call, in the context our wrapper made current
        seen.append((trace.get_current_span(), otel_context.get_value("suppress_language_model_instrumentation")))

    with openai.OpenAI(base_url=openai_api.base_url(server), api_key="k", max_retries=0,
                       http_client=httpx.Client(event_hooks={"request": [hook]})) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    [span] = pipeline.llm_spans()
    [(current, suppressed)] = seen
    assert current.get_span_context() == span.get_span_context()
    assert suppressed is True
    assert trace.get_current_span() is trace.INVALID_SPAN  # and nothing is left attached


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:8080/v1", ("127.0.0.1", 8080)),
    ("https://api.openai.com/v1/", ("api.openai.com", 443)),
    ("http://Example.COM/x", ("example.com", 80)),
    ("ftp://host/x", ("host", None)),
    ("not a url", (None, None)),
    ("http://host:notaport/", (None, None)),
    (None, (None, None)),
])
def test_server_of_is_what_urlsplit_says_for_every_spelling(url, expected):
    from tokentrail.instrumentation.genai_span import server_of

    assert server_of(url) == server_of(url) == expected


def test_the_text_of_each_sdk_url_object_is_its_own():
    import openai

    from tokentrail.instrumentation.genai_span import url_text

    clients = [openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k") for port in range(9000, 9100)]
    for client in clients:  # more URL objects than are remembered
        assert url_text(client.base_url) == str(client.base_url)
    for client in clients:
        assert url_text(client.base_url) == str(client.base_url)
    client = clients[0]
    client.base_url = "http://127.0.0.1:9999/v2"  # the SDK makes a new URL object
    assert url_text(client.base_url) == str(client.base_url) == "http://127.0.0.1:9999/v2/"


def _inconsistent_cases():
    from tokentrail.instrumentation.anthropic import usage as anthropic_usage
    from tokentrail.instrumentation.openai import streaming
    from tokentrail.instrumentation.openai import usage as openai_usage

    def chat_stream(block):
        state = streaming.ChatStreamState(False)
        state.usage_block = block
        return state.usage

    def responses_stream(block):
        state = streaming.ResponsesStreamState()
        state.final = {"usage": block}
        return state.usage

    def anthropic_stream(block):
        state = anthropic_usage.MessageStreamState()
        state.usage_block = block
        return state.usage

    chat = {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 50}}
    responses = {"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 50}}
    anthropic = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 10 ** 12}
    return [
        ("chat_usage", lambda: openai_usage.chat_usage, chat),
        ("responses_usage", lambda: lambda b: openai_usage.responses_usage({"usage": b}), responses),
        ("embeddings_usage", lambda: openai_usage.embeddings_usage, {"prompt_tokens": -1}),
        ("usage_from_anthropic", lambda: anthropic_usage.usage_from_anthropic, anthropic),
        ("chat stream", lambda: lambda b: chat_stream(b)(), chat),
        ("responses stream", lambda: lambda b: responses_stream(b)(), responses),
        ("anthropic stream", lambda: lambda b: anthropic_stream(b)(), anthropic),
    ]


@pytest.mark.parametrize("name, reader, block", _inconsistent_cases(), ids=[c[0] for c in _inconsistent_cases()])
def test_the_readers_marked_validated_reject_what_validate_rejects(name, reader, block):
    """read_usage does not validate again what a reader marked ``fields.validated`` returns: each
    such reader must refuse an inconsistent block itself."""
    from tokentrail.processor.usage import InvalidUsage

    with pytest.raises(InvalidUsage):
        reader()(block)


def test_the_validated_marks_are_on_the_readers_the_calls_use():
    from tokentrail.instrumentation.anthropic import usage as anthropic_usage
    from tokentrail.instrumentation.openai import streaming
    from tokentrail.instrumentation.openai import usage as openai_usage

    for reader in (openai_usage.chat_usage, openai_usage.responses_usage, openai_usage.embeddings_usage,
                   anthropic_usage.usage_from_anthropic, streaming.ChatStreamState(False).usage,
                   streaming.CapturingChatStreamState(False).usage, streaming.ResponsesStreamState().usage,
                   anthropic_usage.MessageStreamState().usage):
        assert getattr(reader, "validated", False), reader


def _reader_cases():
    """Objects fields are read from: SDK models (declared fields, extras, unset ones), dicts
    (camelCase too), plain objects and None."""
    import types

    from anthropic.types import Message, Usage
    from openai.types.chat import ChatCompletion

    message = Message.model_validate({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514", "content": [],
        "stop_reason": "end_turn", "usage": {"input_tokens": 20, "output_tokens": 5, "cache_read_input_tokens": None}})
    with_extra = Usage.model_validate({"input_tokens": 1, "output_tokens": 2, "proxy_tokens": 7, "model": "x"})
    built = Usage.model_construct(input_tokens=3)  # no output_tokens at all
    completion = ChatCompletion.model_validate({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                                                "choices": [], "usage": None, "vendor_field": {"a": 1}})
    return [message, message.usage, with_extra, built, completion, {"input_tokens": 4, "cacheReadInputTokens": 2},
            types.SimpleNamespace(input_tokens=5, model=None), None, 7]


@pytest.mark.parametrize("obj", _reader_cases())
def test_a_reader_reads_every_name_as_field_does(obj):
    from tokentrail.instrumentation.fields import field, reader

    names = ("id", "model", "usage", "stop_reason", "input_tokens", "output_tokens", "cache_read_input_tokens",
             "proxy_tokens", "vendor_field", "choices", "absent_name", "__dict__")
    read = reader(obj)
    assert [read(name) for name in names] == [field(obj, name) for name in names]


class _OwnerHeader:
    """A vendor propagator of its own that reads the baggage too."""

    fields = {"x-owner"}

    def inject(self, carrier, context=None, setter=None):
        from opentelemetry import baggage

        carrier["x-owner"] = str(baggage.get_baggage("tokentrail.tenant", context))

    def extract(self, carrier, context=None, getter=None):
        return context


def _textmaps():
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return {
        "default": CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]),
        "baggage first, a vendor's": CompositePropagator([W3CBaggagePropagator(), _OwnerHeader(),
                                                          TraceContextTextMapPropagator()]),
        "baggage alone": W3CBaggagePropagator(),
        "tracecontext alone": TraceContextTextMapPropagator(),
        "a vendor's alone": _OwnerHeader(),
    }


_BAGGAGE_VALUES = st.one_of(st.text(max_size=12), st.sampled_from(["acme", "a b,c=d;e", "é/ü", "x" * 5000]),
                            st.integers())


@pytest.mark.parametrize("textmap", list(_textmaps()))
@settings(max_examples=60, deadline=None)
@given(entries=st.dictionaries(st.sampled_from(["tokentrail.tenant", "tokentrail.feature", "k", "ü k", ""]),
                               _BAGGAGE_VALUES, max_size=4))
def test_span_headers_are_the_headers_the_sdk_makes(textmap, entries):
    """propagation.span_headers, the baggage header remembered per entry set: the very headers
    anthropic's own trace_headers makes, under any global propagator and any baggage."""
    from anthropic import _tracing
    from opentelemetry import baggage, propagate
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider

    from tokentrail.propagation import span_headers

    sdk_headers = getattr(_tracing.trace_headers, "__wrapped__", _tracing.trace_headers)
    span = TracerProvider().get_tracer("t").start_span("chat")
    context = Context()
    for key, value in entries.items():
        context = baggage.set_baggage(key, value, context)
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(_textmaps()[textmap])
    token = otel_context.attach(context)
    try:
        for _ in range(2):  # the second time from what was remembered
            assert list(span_headers(span, sdk_headers).items()) == list(sdk_headers(span).items())  # in order
    finally:
        otel_context.detach(token)
        propagate.set_global_textmap(before)


def test_span_headers_quote_an_owner_once(monkeypatch):
    from anthropic import _tracing
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.sdk.trace import TracerProvider

    import tokentrail
    from tokentrail.propagation import span_headers

    sdk_headers = getattr(_tracing.trace_headers, "__wrapped__", _tracing.trace_headers)
    span = TracerProvider().get_tracer("t").start_span("chat")
    encoded = []
    inject = W3CBaggagePropagator.inject
    monkeypatch.setattr(W3CBaggagePropagator, "inject",
                        lambda self, *a, **k: encoded.append(1) or inject(self, *a, **k))
    for _ in range(3):
        with tokentrail.attribute(tenant="acme", feature="quote-once"):
            headers = span_headers(span, sdk_headers)
    assert headers["baggage"] == "tokentrail.tenant=acme,tokentrail.feature=quote-once"
    assert encoded == [1]
