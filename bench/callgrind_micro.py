"""CPU instructions of single pipeline steps (valgrind callgrind), for finding where a call's
instructions go: one metric point (tokentrail's summed instruments and the SDK's own), a whole
``record_llm_call``, ``price_span``, the CostSpanProcessor's pass over a priced span, a span's
start and end, a call's late attributes, anthropic usage and propagation headers.

    python bench/callgrind_micro.py [--n 200] [--only SUBSTRING]

Runs itself under ``valgrind --tool=callgrind --instr-atstart=no`` and prints instructions per
step (the same client-request helper as bench_callgrind.py switches counting on around each
block of ``--n`` repetitions, after as many uncounted ones).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_callgrind import Callgrind, build_helper, read_dumps  # noqa: E402

ATTRS = {
    "gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-5.4-mini",
    "server.address": "127.0.0.1", "server.port": 8080, "gen_ai.response.model": "gpt-5.4-mini",
    "gen_ai.response.id": "chatcmpl-1", "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.usage.input_tokens": 2000, "gen_ai.usage.output_tokens": 200,
    "gen_ai.usage.cache_read.input_tokens": 500,
    "tokentrail.tenant": "acme", "tokentrail.feature": "summarize", "tokentrail.attributed": True,
}


def steps(n: int):
    """(label, function run n times) for each step."""
    from opentelemetry import trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from tokentrail.processor.cost import CostSpanProcessor
    from tokentrail.processor.metrics import instruments_for, metric_attributes, metric_views, record_llm_call
    from tokentrail.processor.pricing import price_span
    from tokentrail.processor.sdk import NO_EXEMPLAR

    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], views=metric_views(), shutdown_on_exit=False)
    tp = TracerProvider(shutdown_on_exit=False)
    cost = CostSpanProcessor(None, meter_provider=mp)
    tp.add_span_processor(cost)
    tracer = tp.get_tracer("tokentrail.instrumentation.bench")
    priced = {**ATTRS, **price_span(ATTRS, 1_780_000_000_000_000_000)}
    inst = instruments_for(mp)
    point = metric_attributes(priced, {})
    with tracer.start_as_current_span("chat") as span:
        ctx = trace.set_span_in_context(span)
    meter = mp.get_meter("bench")
    plain_hist = meter.create_histogram("bench.h")
    plain_counter = meter.create_counter("bench.c")
    small = {"a": "x"}

    def twenty_calls(collect: bool) -> None:
        for _ in range(20):
            record_llm_call(priced, 0.5, meter_provider=mp, context=ctx, resource_attributes={})
        if collect:
            reader.get_metrics_data()

    def span_start_end():
        s = tracer.start_span("chat gpt-5.4-mini", attributes=dict(ATTRS))
        s.set_attributes({"gen_ai.usage.output_tokens": 200})
        s.end()

    import os

    import tokentrail
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from bench_callgrind import SCHEDULE_DELAY_MS, _exporter
    from tokentrail.instrumentation.base import Instruments
    from tokentrail.instrumentation.genai_span import start_llm_call
    from tokentrail.processor.attribution import AttributionSpanProcessor, owner_stamp
    from tokentrail.processor.usage import Usage

    def pipeline(metrics: bool, processors: str = "attribution,cost,batch") -> Instruments:
        """The bench's whole pipeline: attribution, cost around a batch export, metrics or not."""
        provider = TracerProvider(shutdown_on_exit=False)
        if "attribution" in processors:
            provider.add_span_processor(AttributionSpanProcessor())
        batch = BatchSpanProcessor(_exporter(), schedule_delay_millis=SCHEDULE_DELAY_MS) if "batch" in processors else None
        if "cost" in processors:
            provider.add_span_processor(CostSpanProcessor(batch, meter_provider=mp, record_metrics=metrics))
        return Instruments(provider.get_tracer("tokentrail.instrumentation.openai"), tracer_provider=provider,
                           meter_provider=mp)

    scope = tokentrail.attribute(tenant="acme", feature="summarize")
    usage = Usage(input_tokens=2000, output_tokens=200, cache_read_tokens=500)

    def lifecycle(instruments: Instruments):
        def run():
            with scope:
                call = start_llm_call(instruments, provider="openai", operation="chat", request_model="gpt-5.4-mini",
                                      server_address="127.0.0.1", server_port=8080, estimated_input_tokens=2700)
                call.set_response(model="gpt-5.4-mini", response_id="chatcmpl-1", finish_reasons=["stop"])
                call.set_usage(usage)
                call.end()
        return run

    bare_tracer = TracerProvider(shutdown_on_exit=False).get_tracer("bench")

    def bare_span():
        s = bare_tracer.start_span("chat gpt-5.4-mini", attributes=dict(list(ATTRS.items())[:12]))
        s.set_attributes(dict(list(priced.items())[12:20]))
        s.end()

    def stamp():
        with scope:
            owner_stamp(ATTRS)

    from opentelemetry import context as otel_context

    from tokentrail import breakers, preflight, tasks, trust
    from tokentrail.attribution import owner_span_attributes
    from tokentrail.config import env
    from tokentrail.instrumentation.fields import prompt_chars
    from tokentrail.instrumentation.genai_span import should_skip

    from bench_callgrind import MESSAGES

    breakers.install()  # as every instrumentor's instrument() does: the breakers' hooks run on each call
    planned = preflight.PlannedCall(provider="openai", model="gpt-5.4-mini", estimated_input_tokens=2700,
                                    max_output_tokens=None)
    cost_pipeline = pipeline(False, "cost")

    def preflight_block():
        with scope:
            call = start_llm_call(cost_pipeline, provider="openai", operation="chat", request_model="gpt-5.4-mini",
                                  check_budget=False)
            with call.activate():
                preflight.check(planned)
            call.end()

    def start_end_no_check():
        with scope:
            start_llm_call(cost_pipeline, provider="openai", operation="chat", request_model="gpt-5.4-mini",
                           check_budget=False).end()

    def start_end():
        with scope:
            start_llm_call(cost_pipeline, provider="openai", operation="chat", request_model="gpt-5.4-mini",
                           estimated_input_tokens=2700).end()

    import wrapt

    class Sdk:
        def create(self, **kwargs):
            return kwargs

    Wrapped = type("Wrapped", (Sdk,), {})
    wrapt.wrap_function_wrapper(Wrapped, "create", lambda wrapped, instance, args, kwargs: wrapped(*args, **kwargs))
    plain_sdk, wrapped_sdk = Sdk(), Wrapped()
    ended_span = tracer.start_span("chat")
    ended_span.end()

    def fresh_scope():
        with tokentrail.attribute(tenant="acme", feature="summarize"):
            pass

    def owner_in_scope():
        with scope:
            owner_span_attributes()

    empty_ctx = otel_context.Context()

    import openai
    from openai.types.chat import ChatCompletion

    from tokentrail.instrumentation.openai import patch as openai_patch

    completion = ChatCompletion.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-5.4-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 2000, "completion_tokens": 200, "total_tokens": 2200,
                  "prompt_tokens_details": {"cached_tokens": 500}}})
    resource = openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="bench", max_retries=0).chat.completions
    openai_wrapper = openai_patch.wrapper(openai_patch.CHAT)(cost_pipeline)

    from tokentrail.instrumentation.fields import field
    from tokentrail.instrumentation.openai import streaming as openai_streaming

    chat_kwargs = {"model": "gpt-5.4-mini", "messages": MESSAGES}

    def record_chat_alone():
        with scope:
            call = start_llm_call(cost_pipeline, provider="openai", operation="chat", request_model="gpt-5.4-mini",
                                  check_budget=False)
            openai_streaming.record_chat(call, completion)
            call.end()

    def openai_wrapped_call():  # the SDK method stands in: it hands back the parsed answer at once
        with scope:
            openai_wrapper(lambda **kwargs: completion, resource, (),
                           {"model": "gpt-5.4-mini", "messages": MESSAGES})
    identity_2 = {"tokentrail.tenant": "acme", "tokentrail.feature": "summarize"}
    cost_only = CostSpanProcessor(None, meter_provider=mp, record_metrics=False)
    ended = tracer.start_span("chat", attributes=priced)
    ended.end()
    from anthropic import _tracing
    from anthropic.types import Message

    from tokentrail import propagation
    from tokentrail.instrumentation.anthropic.usage import usage_from_anthropic
    from tokentrail.processor import sdk

    late = {k: v for k, v in priced.items() if k not in ATTRS}
    late.update({"gen_ai.response.model": "gpt-5.4-mini", "gen_ai.response.finish_reasons": ("stop",)})

    def late_attributes(write):
        def run():
            s = tracer.start_span("chat", attributes=ATTRS)
            write(s, late)
            s.end()
        return run

    message = Message.model_validate({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514", "content": [],
        "stop_reason": "end_turn", "usage": {"input_tokens": 2000, "output_tokens": 200, "service_tier": "standard"}})
    sdk_headers = getattr(_tracing.trace_headers, "__wrapped__", _tracing.trace_headers)
    header_span = tracer.start_span("chat")

    def headers_in_scope(headers_of):
        def run():
            with tokentrail.attribute(tenant="acme", feature="summarize"):
                headers_of()
        return run

    return [
        (f"span start (14 attributes), set_attributes of a call's {len(late)} late ones, end "
         "(CostSpanProcessor, metrics)",
         late_attributes(lambda span, values: span.set_attributes(values))),
        ("the same, the late ones through sdk.set_span_attributes", late_attributes(sdk.set_span_attributes)),
        ("usage_from_anthropic of a Message's usage", lambda: usage_from_anthropic(message.usage)),
        ("anthropic trace_headers in a fresh attribute() scope (the owner in baggage)",
         headers_in_scope(lambda: sdk_headers(header_span))),
        ("the same through propagation.span_headers", headers_in_scope(
            lambda: propagation.span_headers(header_span, sdk_headers))),
        ("tokentrail.cost (summed Histogram).record, 10 attributes, exemplar",
         lambda: inst.cost.record(0.002, point, context=ctx)),
        ("the same through the SDK's own histogram", lambda: plain_hist.record(0.002, point, context=ctx)),
        ("tokentrail.cost (summed Histogram).record, 10 attributes, no exemplar", lambda: inst.cost.record(0.002, point,
                                                                                      context=NO_EXEMPLAR)),
        ("SDK histogram.record, 1 attribute, no view", lambda: plain_hist.record(1.0, small, context=NO_EXEMPLAR)),
        ("tokentrail.tokens (summed Sum).add, 10 attributes", lambda: inst.tokens.add(200, point, context=NO_EXEMPLAR)),
        ("SDK counter.add, 10 attributes, no exemplar", lambda: plain_counter.add(1, point, context=NO_EXEMPLAR)),
        ("SDK counter.add, 1 attribute, no view", lambda: plain_counter.add(1, small, context=NO_EXEMPLAR)),
        ("record_llm_call (every point of one call)", lambda: record_llm_call(priced, 0.5, meter_provider=mp,
                                                                              context=ctx, resource_attributes={})),
        ("20 record_llm_call", lambda: twenty_calls(False)),
        ("20 record_llm_call and a collection (the sums added to the SDK's aggregations, its data points)",
         lambda: twenty_calls(True)),
        ("metric_attributes", lambda: metric_attributes(priced, {})),
        ("price_span", lambda: price_span(ATTRS, 1_780_000_000_000_000_000)),
        ("span start, set_attributes, end (CostSpanProcessor, metrics)", span_start_end),
        ("CostSpanProcessor.on_end, priced span, no metrics", lambda: cost_only.on_end(ended)),
        ("LLM call without the SDK call (start_llm_call .. end), whole pipeline", lifecycle(pipeline(True))),
        ("the same, no metrics", lifecycle(pipeline(False))),
        ("the same, no metrics, no batch export", lifecycle(pipeline(False, "attribution,cost"))),
        ("the same, no metrics, no export, no AttributionSpanProcessor", lifecycle(pipeline(False, "cost"))),
        ("the same, no processor at all (metrics from the instrumentation)", lifecycle(pipeline(False, ""))),
        ("SDK span alone: start 12 attributes, set 8, end, no processor", bare_span),
        ("attribute() scope + owner_stamp", stamp),
        ("attribute() scope alone", lambda: scope.__enter__() and scope.__exit__(None, None, None)),
        ("attribute(tenant, feature) built, entered, left (the bench's scope per call)", fresh_scope),
        ("owner_span_attributes in an attribute() scope (less the scope)", owner_in_scope),
        ("start_llm_call .. end, CostSpanProcessor only, no pre-flight", start_end_no_check),
        ("start_llm_call .. end, CostSpanProcessor only, pre-flight (no budget or task)", start_end),
        ("the same by hand: PlannedCall, activate, preflight.check", preflight_block),
        ("trust.baggage_with_identity, tenant and feature", lambda: trust.baggage_with_identity(empty_ctx, identity_2)),
        ("attach + detach of a context", lambda: otel_context.detach(otel_context.attach(empty_ctx))),
        ("os.environ.get of a variable not set", lambda: os.environ.get("TOKENTRAIL_BENCH_UNSET")),
        ("the same, of a variable set", lambda: os.environ.get("PATH")),
        ("config.env of a variable not set", lambda: env("TOKENTRAIL_BENCH_UNSET")),
        ("the same, of a variable set (config.env)", lambda: env("PATH")),
        ("preflight.armed(), breakers installed, no budget or task", preflight.armed),
        ("should_skip", should_skip),
        ("prompt_chars, the bench's 8 KB message", lambda: prompt_chars((MESSAGES, None))),
        ("tasks.on_llm_call_end, no task or budget", lambda: tasks.on_llm_call_end(ended_span, priced)),
        ("openai chat wrapper around a stand-in create (answer at once), CostSpanProcessor only, in scope",
         openai_wrapped_call),
        ("Usage.validate", usage.validate),
        ("fields.field of a declared pydantic field", lambda: field(completion, "model")),
        ("openai _plan of the bench's request", lambda: openai_patch._plan(cost_pipeline, "chat", resource, chat_kwargs)),
        ("start_llm_call, record_chat, end, in scope (CostSpanProcessor only)", record_chat_alone),
        ("method call through a pass-through wrapt wrapper", lambda: wrapped_sdk.create(model="m")),
        ("the same method unwrapped", lambda: plain_sdk.create(model="m")),
    ]


def child(args: argparse.Namespace) -> None:
    cg = Callgrind(args.helper)
    for label, fn in steps(args.n):
        if args.only and args.only not in label:
            continue
        for _ in range(args.n):
            fn()
        with cg.measure(label):
            for _ in range(args.n):
                fn()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--only", default="", help="measure only the steps whose label contains this")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--helper", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    helper = build_helper()
    with tempfile.TemporaryDirectory() as folder:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=no", "--dump-line=no",
               f"--callgrind-out-file={folder}/micro.%p.out", sys.executable, __file__, "--child",
               "--helper", str(helper), "--n", str(args.n), "--only", args.only]
        subprocess.run(cmd, check=True, capture_output=True, env={"PYTHONHASHSEED": "0", **_env()})
        counts = read_dumps(Path(folder), "micro")
    order = [label for label, _ in steps(1)]
    width = max(len(label) for label in counts)
    for label, total in sorted(counts.items(), key=lambda item: order.index(item[0])):
        print(f"{label:<{width}}  {total / args.n / 1e3:9.1f} k instructions")


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not re.match(r"PYTHONHASHSEED$", k)}


if __name__ == "__main__":
    main()
