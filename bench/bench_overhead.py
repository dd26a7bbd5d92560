"""Added latency and CPU per OpenAI call: tokentrail's whole pipeline vs the bare SDK, beside
the official OpenTelemetry OpenAI instrumentation as a reference, all in one run.

    python bench/bench_overhead.py [--calls 200] [--rounds 7]

The fake provider runs in a child process, so ``time.process_time()`` here counts only the
client side: the openai SDK, our wrappers, processors, pricing, metrics and the
BatchSpanProcessor worker thread (exporting to a no-op exporter). Modes run interleaved in
rounds and each figure is the median over rounds, as a ratio to the bare SDK measured in the
same round. Streaming cost per chunk is the slope between a short and a long stream.

Modes:
  bare      the openai SDK, nothing instrumented
  official  opentelemetry-instrumentation-genai-openai alone (TracerProvider + BatchSpanProcessor
            to a no-op exporter, MeterProvider), as a reference
  tokentrail tokentrail's OpenAI instrumentation inside tokentrail.attribute(...), with
            AttributionSpanProcessor + CostSpanProcessor(BatchSpanProcessor(no-op)) and the cost
            metrics (views, in-memory reader): span, attribution, pricing, metrics, batch export
  tokentrail-no-metrics  (in-process table only) the same without recording metrics, to show
            what the metric points cost
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import openai
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import tokentrail
from tokentrail.processor.attribution import AttributionSpanProcessor
from tokentrail.processor.cost import CostSpanProcessor
from tokentrail.processor.metrics import metric_views
from tokentrail.semconv import attributes as attr

SERVER = (
    "import sys\n"
    "from tokentrail.testing import fake_provider\n"
    "from tokentrail.testing.openai_api import base_url\n"
    "s = fake_provider()\n"
    "print(base_url(s), flush=True)\n"
    "sys.stdin.read()\n"
    "s.stop()\n"
)
HEADER = "x-fake-openai"
MESSAGES = [{"role": "user", "content": "Summarise this support ticket in one line."}]


def inprocess_client() -> openai.OpenAI:
    """An openai client whose HTTP transport answers in-process with the fake provider's exact
    bytes (tokentrail.testing.openai_api shapes): no sockets, no server thread, so the per-call
    differences are not drowned in loopback and scheduler noise."""
    import httpx2

    from tokentrail.testing import openai_api

    def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        r = openai_api.Reply(**json.loads(request.headers.get(HEADER, "{}")))
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            sse = b"".join(b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\n\n"
                           for c in openai_api.chat_chunks(r, body["model"], include)) + b"data: [DONE]\n\n"
            return httpx2.Response(200, content=sse, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=openai_api.chat_completion_json(r, body["model"]))

    return openai.OpenAI(base_url="http://fake.invalid/v1", api_key="bench", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handle)))


class NoopExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class Mode:
    name = "bare"

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def scope(self):
        from contextlib import nullcontext

        return nullcontext()


class Official(Mode):
    name = "official"

    def setup(self) -> None:
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

        self.tp = TracerProvider(shutdown_on_exit=False)
        self.tp.add_span_processor(BatchSpanProcessor(NoopExporter()))
        self.mp = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
        self.inst = OpenAIInstrumentor()
        self.inst.instrument(tracer_provider=self.tp, meter_provider=self.mp, skip_dep_check=True)

    def teardown(self) -> None:
        self.inst.uninstrument()
        self.tp.shutdown()
        self.mp.shutdown()


class Tokentrail(Mode):
    name = "tokentrail"
    record_metrics = True

    def setup(self) -> None:
        from tokentrail.instrumentation.openai import OpenAIInstrumentor

        self.mp = MeterProvider(metric_readers=[InMemoryMetricReader()], views=metric_views(),
                                shutdown_on_exit=False)
        self.tp = TracerProvider(shutdown_on_exit=False)
        self.tp.add_span_processor(AttributionSpanProcessor())
        self.tp.add_span_processor(CostSpanProcessor(BatchSpanProcessor(NoopExporter()), meter_provider=self.mp,
                                                     record_metrics=self.record_metrics))
        self.inst = OpenAIInstrumentor()
        self.inst.instrument(tracer_provider=self.tp, meter_provider=self.mp, skip_dep_check=True)
        assert self.inst._patches, "tokentrail's OpenAI instrumentation did not patch the SDK"

    def teardown(self) -> None:
        self.inst.uninstrument()
        self.tp.shutdown()
        self.mp.shutdown()

    def scope(self):
        return tokentrail.attribute(tenant="acme", feature="summarize")


class TokentrailNoMetrics(Tokentrail):
    """Breakdown only: the same pipeline with the metric recording switched off."""

    name = "tokentrail-no-metrics"
    record_metrics = False


def run_block(mode: Mode, call: Callable[[], None], n: int) -> tuple[float, float]:
    """Per-call (wall µs, CPU µs) over ``n`` calls, after a short warm-up."""
    mode.setup()
    try:
        for _ in range(5):
            with mode.scope():
                call()
        mode_tp = getattr(mode, "tp", None)
        if mode_tp is not None:
            mode_tp.force_flush()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            with mode.scope():
                call()
        if mode_tp is not None:
            mode_tp.force_flush()  # the export work belongs to the calls
        w1, c1 = time.perf_counter(), time.process_time()
    finally:
        mode.teardown()
    return (w1 - w0) / n * 1e6, (c1 - c0) / n * 1e6


def price_span_us(n: int = 20000) -> float:
    from tokentrail.processor.pricing import price_span

    attrs = {
        attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat",
        attr.GEN_AI_REQUEST_MODEL: "gpt-5.4-mini",
        attr.GEN_AI_USAGE_INPUT_TOKENS: 10000, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 1200,
        attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 2000,
    }
    start = time.time_ns()
    for _ in range(1000):
        price_span(attrs, start)
    t0 = time.process_time()
    for _ in range(n):
        price_span(attrs, start)
    return (time.process_time() - t0) / n * 1e6


def per_chunk_us(chunks: list[Any], reps: int = 200) -> tuple[float, float]:
    """Added CPU per chunk of tokentrail's stream proxy over real SDK-parsed chunks, without
    the network: iterating the chunks plainly vs through the proxy our instrumentation returns
    (slope between a short and the full stream, so the once-per-stream end is excluded)."""
    from tokentrail.instrumentation.base import Instruments
    from tokentrail.instrumentation.genai_span import start_llm_call
    from tokentrail.instrumentation.openai.streaming import ChatStreamState
    from tokentrail.instrumentation.streams import StateStreamHooks, SyncStreamProxy

    mp = MeterProvider(metric_readers=[InMemoryMetricReader()], views=metric_views(), shutdown_on_exit=False)
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(AttributionSpanProcessor())
    tp.add_span_processor(CostSpanProcessor(BatchSpanProcessor(NoopExporter()), meter_provider=mp))
    instruments = Instruments(tp.get_tracer("bench"), tracer_provider=tp, meter_provider=mp)

    def plain(items: list[Any]) -> float:
        t0 = time.process_time()
        for _ in range(reps):
            for _ in iter(items):
                pass
        return time.process_time() - t0

    def proxied(items: list[Any]) -> float:
        t0 = time.process_time()
        for _ in range(reps):
            call = start_llm_call(instruments, provider="openai", operation="chat", request_model="gpt-5.4-mini")
            for _ in SyncStreamProxy(iter(items), StateStreamHooks(call, ChatStreamState(True))):
                pass
        return time.process_time() - t0

    short = chunks[:10] + chunks[-2:]  # keep the final and usage chunks
    samples = []
    for _ in range(5):
        added_long = proxied(chunks) - plain(chunks)
        added_short = proxied(short) - plain(short)
        samples.append((added_long - added_short) / reps / (len(chunks) - len(short)) * 1e6)
    tp.shutdown()
    mp.shutdown()
    return statistics.median(samples), min(samples)


def workloads_for(client: openai.OpenAI, calls: int, short_chunks: int, long_chunks: int | None):
    usage = {"prompt_tokens": 10000, "cached_tokens": 2000, "completion_tokens": 1200}

    def nonstream() -> None:
        client.chat.completions.create(model="gpt-5.4-mini", messages=MESSAGES,
                                       extra_headers={HEADER: json.dumps(usage)})

    def stream_of(chunks: int) -> Callable[[], None]:
        header = json.dumps({**usage, "chunk_count": chunks, "content": "tok " * chunks})

        def go() -> None:
            for _ in client.chat.completions.create(model="gpt-5.4-mini", messages=MESSAGES, stream=True,
                                                    extra_headers={HEADER: header}):
                pass
        return go

    out = {"non-streaming": (nonstream, calls), f"stream {short_chunks} chunks": (stream_of(short_chunks), calls)}
    if long_chunks:
        out[f"stream {long_chunks} chunks"] = (stream_of(long_chunks), max(20, calls // 4))
    return out


def measure(workloads: dict, rounds: int, label: str, breakdown: bool = False
            ) -> dict[tuple[str, str], list[tuple[float, float]]]:
    modes = [Mode(), Official(), Tokentrail()] + ([TokentrailNoMetrics()] if breakdown else [])
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in range(rounds):
        for wname, (call, n) in workloads.items():
            order = modes if r % 2 == 0 else list(reversed(modes))
            for mode in order:
                results.setdefault((wname, mode.name), []).append(run_block(mode, call, n))
        print(f"{label}: round {r + 1}/{rounds} done", file=sys.stderr)
    return results


def report(results: dict, workloads: dict, rounds: int) -> None:
    def added(wname: str, mode: str, idx: int) -> float:
        # per-round difference to bare, median over rounds (blocks minutes apart drift)
        return statistics.median(m[idx] - b[idx] for m, b in zip(results[(wname, mode)], results[(wname, "bare")]))

    def ratio(wname: str, mode: str, idx: int) -> float:
        return statistics.median(m[idx] / b[idx] for m, b in zip(results[(wname, mode)], results[(wname, "bare")]))

    print("| workload | mode | wall µs | CPU µs | added wall µs | added CPU µs | wall ratio | CPU ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for wname in workloads:
        for mode in ("bare", "official", "tokentrail", "tokentrail-no-metrics"):
            if (wname, mode) not in results:
                continue
            rows = results[(wname, mode)]
            wall = statistics.median(x[0] for x in rows)
            cpu = statistics.median(x[1] for x in rows)
            if mode == "bare":
                print(f"| {wname} | {mode} | {wall:.0f} | {cpu:.0f} | - | - | 1.00 | 1.00 |")
            else:
                print(f"| {wname} | {mode} | {wall:.0f} | {cpu:.0f} | {added(wname, mode, 0):+.0f} | "
                      f"{added(wname, mode, 1):+.0f} | {ratio(wname, mode, 0):.3f} | {ratio(wname, mode, 1):.3f} |")
    names = [w for w in workloads if w.startswith("stream")]
    if len(names) == 2:
        short, long_ = names
        span = int(long_.split()[1]) - int(short.split()[1])
        print()
        for mode in ("official", "tokentrail"):
            per_chunk = (added(long_, mode, 1) - added(short, mode, 1)) / span
            print(f"{mode}: added CPU per streamed chunk {per_chunk:.2f} µs (slope of added CPU, {short} -> {long_})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200, help="calls per mode per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--short-chunks", type=int, default=10)
    ap.add_argument("--long-chunks", type=int, default=400)
    args = ap.parse_args()

    # 1. In-process transport: the precise per-call figure.
    inproc = workloads_for(inprocess_client(), args.calls * 2, args.short_chunks, None)
    inproc_results = measure(inproc, args.rounds, "in-process", breakdown=True)

    # 2. The fake provider on loopback: the real HTTP stack, and streaming per chunk.
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        base = server.stdout.readline().strip()
        client = openai.OpenAI(base_url=base, api_key="bench", max_retries=0)
        loopback = workloads_for(client, args.calls, args.short_chunks, args.long_chunks)
        loop_results = measure(loopback, args.rounds, "loopback")
        # Real chunks parsed by the SDK (no instrumentation active) for the per-chunk figure.
        header = json.dumps({"prompt_tokens": 10000, "completion_tokens": 1200, "chunk_count": args.long_chunks,
                             "content": "tok " * args.long_chunks})
        chunks = list(client.chat.completions.create(
            model="gpt-5.4-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
            extra_headers={HEADER: header}))
    finally:
        server.stdin.close()
        server.wait(timeout=10)

    print(f"\nper call, median of {args.rounds} rounds; bare = the openai SDK alone\n")
    print("In-process HTTP transport (the fake provider's bytes, no sockets):\n")
    report(inproc_results, inproc, args.rounds)
    print("\nFake provider on loopback (child process):\n")
    report(loop_results, loopback, args.rounds)
    print()
    median, best = per_chunk_us(chunks)
    print(f"tokentrail stream proxy, in memory: added CPU per chunk {median:.2f} µs median, {best:.2f} µs best "
          f"of 5 ({len(chunks)} real ChatCompletionChunks, slope vs 12)")
    print(f"price_span, warm: {price_span_us():.2f} µs CPU per span")


if __name__ == "__main__":
    main()
