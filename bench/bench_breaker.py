"""The circuit breaker's own cost per LLM call, as a ratio to the same pipeline without it.

    python bench/bench_breaker.py [--calls 300] [--rounds 7] [--json]

Two measurements, both in one run:

1. End to end through the real openai SDK against the fake provider (in a child process, so
   ``time.process_time()`` counts only the client): tokentrail's whole pipeline inside
   ``tokentrail.attribute(...)`` (the baseline: no task, no budgets), then the same calls inside a
   ``tokentrail.task`` with all three limits (budget_usd, max_calls, max_usd_per_minute), then
   also with an enforced tenant budget from ``TOKENTRAIL_BUDGETS`` (in-memory counter). Modes
   are interleaved in rounds; each figure is the median over rounds.
2. The breaker alone: ``preflight.check(planned)`` with the breakers installed (worst-case quote,
   limit checks, admission) plus ``tasks.on_llm_call_end`` (accounting) per call, without the SDK
   or network.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, nullcontext
from typing import Any, Sequence

import openai
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import tokentrail
from tokentrail import breakers, budgets, preflight, tasks, telemetry
from tokentrail.instrumentation.openai import OpenAIInstrumentor
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
MESSAGES = [{"role": "user", "content": "Summarise this support ticket in one line."}]
BUDGETS_YAML = "budgets:\n  - tenant: acme\n    window: day\n    limit_usd: 1000000\n    enforce: true\n"


class NoopExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


MODES = ("no breaker", "task limits", "task + tenant budget")


def scope(mode: str, stack: ExitStack) -> None:
    stack.enter_context(tokentrail.attribute(tenant="acme", feature="summarize"))
    if mode != "no breaker":
        stack.enter_context(tokentrail.task("bench", budget_usd=1e6, max_calls=10**9, max_usd_per_minute=1e6))


def run_block(mode: str, client: openai.OpenAI, tp: TracerProvider, n: int, budgets_path: str) -> float:
    """CPU µs per call over ``n`` calls in ``mode``."""
    if mode == "task + tenant budget":
        os.environ[budgets.ENV_BUDGETS] = budgets_path
    else:
        os.environ.pop(budgets.ENV_BUDGETS, None)
    budgets.config()
    with ExitStack() as stack:
        scope(mode, stack)
        for _ in range(5):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=200)
        tp.force_flush()
        c0 = time.process_time()
        for _ in range(n):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=200)
        tp.force_flush()
        c1 = time.process_time()
    return (c1 - c0) / n * 1e6


def breaker_alone_us(n: int = 20000, with_budget: bool = False, budgets_path: str = "") -> float:
    """µs per call of the pre-flight check + end-of-call accounting, no SDK, no network."""
    if with_budget:
        os.environ[budgets.ENV_BUDGETS] = budgets_path
    else:
        os.environ.pop(budgets.ENV_BUDGETS, None)
    budgets.config()
    breakers.install()
    planned = preflight.PlannedCall(provider="openai", model="gpt-4o-mini", estimated_input_tokens=40,
                                    max_output_tokens=200)
    attributes = {attr.TOKENTRAIL_TENANT: "acme", attr.TOKENTRAIL_COST_STATUS: "priced",
                  attr.TOKENTRAIL_COST_NANO_USD: 126000, attr.GEN_AI_USAGE_INPUT_TOKENS: 40,
                  attr.GEN_AI_USAGE_OUTPUT_TOKENS: 200}
    tp = TracerProvider(shutdown_on_exit=False)  # no processors: the span itself costs little
    tracer = tp.get_tracer("bench")
    spans = [tracer.start_span("chat") for _ in range(64)]
    with tokentrail.attribute(tenant="acme"), tokentrail.task("bench", budget_usd=1e6, max_calls=10**9,
                                                               max_usd_per_minute=1e6):
        def one(span):
            with trace.use_span(span, end_on_exit=False):
                preflight.check(planned)
            tasks.on_llm_call_end(span, attributes)

        for i in range(1000):
            one(spans[i % 64])
        t0 = time.process_time()
        for i in range(n):
            one(spans[i % 64])
        elapsed = time.process_time() - t0
        # the same loop without the breaker: entering the span context only
        t0 = time.process_time()
        for i in range(n):
            with trace.use_span(spans[i % 64], end_on_exit=False):
                pass
        base = time.process_time() - t0
    return (elapsed - base) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(BUDGETS_YAML)
        budgets_path = fh.name
    try:
        base_url = server.stdout.readline().strip()
        mp = MeterProvider(metric_readers=[InMemoryMetricReader()], views=metric_views(), shutdown_on_exit=False)
        tp = TracerProvider(shutdown_on_exit=False)
        tp.add_span_processor(AttributionSpanProcessor())
        tp.add_span_processor(CostSpanProcessor(BatchSpanProcessor(NoopExporter()), meter_provider=mp))
        telemetry.use_providers(tp, mp)
        inst = OpenAIInstrumentor()
        inst.instrument(tracer_provider=tp, meter_provider=mp, skip_dep_check=True)
        client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
        samples: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                samples[mode].append(run_block(mode, client, tp, args.calls, budgets_path))
        inst.uninstrument()
        alone = statistics.median(breaker_alone_us() for _ in range(5))
        alone_budget = statistics.median(breaker_alone_us(with_budget=True, budgets_path=budgets_path)
                                         for _ in range(5))
    finally:
        os.environ.pop(budgets.ENV_BUDGETS, None)
        os.unlink(budgets_path)
        server.stdin.close()
        server.wait(timeout=10)

    base = statistics.median(samples["no breaker"])
    result = {
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "cpu_us_per_call": {m: round(statistics.median(v), 1) for m, v in samples.items()},
        "ratio_to_no_breaker": {m: round(statistics.median(v) / base, 3) for m, v in samples.items()},
        "breaker_alone_us": round(alone, 2),
        "breaker_alone_with_tenant_budget_us": round(alone_budget, 2),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"CPU per call through the openai SDK (median of {args.rounds} rounds x {args.calls} calls):")
    for mode in MODES:
        print(f"  {mode:22s} {result['cpu_us_per_call'][mode]:8.1f} µs   x{result['ratio_to_no_breaker'][mode]:.3f}")
    print(f"breaker alone (pre-flight + accounting): {alone:.2f} µs per call; with an enforced tenant budget: "
          f"{alone_budget:.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
