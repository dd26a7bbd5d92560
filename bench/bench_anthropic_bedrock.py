"""Client CPU per Anthropic and Bedrock call: tokentrail vs the bare SDK, in one run.

    python bench/bench_anthropic_bedrock.py [--calls 150] [--rounds 5] [--json]

The fake provider runs in a child process, so ``time.process_time()`` counts only this side:
the SDK, our wrappers, processors, pricing, metrics and the BatchSpanProcessor worker
(exporting to a no-op exporter). Modes run interleaved in rounds; each figure is the median
over rounds, and ratios are to the bare SDK of the same round. Per-chunk cost is the slope
between a 10-delta and a 200-delta stream.

Modes:
  bare        the SDK, no TracerProvider anywhere
  native      anthropic only: the SDK's own OpenTelemetry spans, priced by tokentrail's
              CostSpanProcessor (what a user gets without our instrumentor)
  tokentrail  our instrumentor (the native span suppressed), attribution, pricing, metrics
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any, Callable

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import tokentrail
from tokentrail.processor.attribution import AttributionSpanProcessor
from tokentrail.processor.cost import CostSpanProcessor
from tokentrail.processor.metrics import metric_views
from tokentrail.testing.anthropic_api import DELTAS_HEADER

warnings.filterwarnings("ignore", category=DeprecationWarning)

SERVER = (
    "import sys\n"
    "from tokentrail.testing import fake_provider\n"
    "s = fake_provider()\n"
    "print(s.url, flush=True)\n"
    "sys.stdin.read()\n"
    "s.stop()\n"
)
MODEL = "claude-sonnet-4-20250514"
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-20250514-v1:0"
MESSAGES = [{"role": "user", "content": "Summarise this support ticket in one line."}]
SHORT, LONG = 10, 200


class NoopExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class Mode:
    def __init__(self, name: str, instrumentor: Any = None, native: bool = False) -> None:
        self.name, self.instrumentor, self.native = name, instrumentor, native
        self.tp: TracerProvider | None = None

    def setup(self) -> None:
        if self.name == "bare":
            return
        self.mp = MeterProvider(metric_readers=[InMemoryMetricReader()], views=metric_views(), shutdown_on_exit=False)
        self.tp = TracerProvider(shutdown_on_exit=False)
        self.tp.add_span_processor(AttributionSpanProcessor())
        self.tp.add_span_processor(CostSpanProcessor(BatchSpanProcessor(NoopExporter()), meter_provider=self.mp))
        if self.instrumentor is not None:
            self.instrumentor.instrument(tracer_provider=self.tp, meter_provider=self.mp, skip_dep_check=True)

    def teardown(self) -> None:
        if self.instrumentor is not None and self.name != "bare":
            self.instrumentor.uninstrument()
        if self.tp is not None:
            self.tp.shutdown()
            self.mp.shutdown()
            self.tp = None


def anthropic_calls(url: str, mode: Mode) -> dict[str, Callable[[], None]]:
    import anthropic

    telemetry = {"tracer_provider": mode.tp} if mode.native else False

    def make(deltas: int) -> Any:
        return anthropic.Anthropic(base_url=url, api_key="k", max_retries=0, open_telemetry=telemetry,
                                   default_headers={DELTAS_HEADER: str(deltas)})

    plain, short, long = make(2), make(SHORT), make(LONG)

    def stream(client: Any) -> Callable[[], None]:
        def run() -> None:
            for _ in client.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES, stream=True):
                pass
        return run

    return {
        "anthropic create": lambda: plain.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES),
        "anthropic stream short": stream(short),
        "anthropic stream long": stream(long),
    }


def bedrock_calls(url: str, mode: Mode) -> dict[str, Callable[[], None]]:
    import boto3
    from botocore.config import Config

    def make(deltas: int) -> Any:
        client = boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id="AKID", aws_secret_access_key="secret",
                              config=Config(retries={"total_max_attempts": 1}))
        client.meta.events.register("before-send.*", lambda request, **_: request.headers.__setitem__(
            DELTAS_HEADER, str(deltas)))
        return client

    plain, short, long = make(2), make(SHORT), make(LONG)
    messages = [{"role": "user", "content": [{"text": MESSAGES[0]["content"]}]}]

    def stream(client: Any) -> Callable[[], None]:
        def run() -> None:
            for _ in client.converse_stream(modelId=BEDROCK_MODEL, messages=messages)["stream"]:
                pass
        return run

    return {
        "bedrock converse": lambda: plain.converse(modelId=BEDROCK_MODEL, messages=messages),
        "bedrock stream short": stream(short),
        "bedrock stream long": stream(long),
    }


def measure(mode: Mode, calls: Callable[[Mode], dict[str, Callable[[], None]]], n: int) -> dict[str, float]:
    """CPU µs per call for each call kind, in this mode."""
    mode.setup()
    out: dict[str, float] = {}
    try:
        for name, call in calls(mode).items():
            for _ in range(5):
                with tokentrail.attribute(tenant="acme"):
                    call()
            if mode.tp is not None:
                mode.tp.force_flush()
            start = time.process_time()
            for _ in range(n):
                with tokentrail.attribute(tenant="acme"):
                    call()
            if mode.tp is not None:
                mode.tp.force_flush()  # export work belongs to the calls
            out[name] = (time.process_time() - start) / n * 1e6
    finally:
        mode.teardown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from tokentrail.instrumentation.anthropic import AnthropicInstrumentor
    from tokentrail.instrumentation.bedrock import BedrockInstrumentor

    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        suites = {
            "anthropic": (lambda m: anthropic_calls(url, m),
                          [Mode("bare"), Mode("native", native=True), Mode("tokentrail", AnthropicInstrumentor())]),
            "bedrock": (lambda m: bedrock_calls(url, m), [Mode("bare"), Mode("tokentrail", BedrockInstrumentor())]),
        }
        samples: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for calls, modes in suites.values():
                results = {mode.name: measure(mode, calls, args.calls) for mode in modes}
                for mode_name, per_call in results.items():
                    for call_name, us in per_call.items():
                        samples.setdefault((mode_name, call_name), []).append(us)
    finally:
        server.stdin.close()
        server.wait(timeout=10)

    median = {key: statistics.median(values) for key, values in samples.items()}
    rows = []
    for call_name in sorted({c for _, c in median}):
        if call_name.endswith("long"):
            continue
        base = call_name.removesuffix(" short")
        for mode_name in ("native", "tokentrail"):
            if (mode_name, call_name) not in median:
                continue
            row = {"call": base, "mode": mode_name, "bare_us": round(median[("bare", call_name)], 1),
                   "mode_us": round(median[(mode_name, call_name)], 1),
                   "ratio": round(median[(mode_name, call_name)] / median[("bare", call_name)], 3)}
            if call_name.endswith("short"):
                long_name = f"{base} long"

                def slope(m: str) -> float:
                    return (median[(m, long_name)] - median[(m, call_name)]) / (LONG - SHORT)

                row["added_us_per_chunk"] = round(slope(mode_name) - slope("bare"), 2)
            rows.append(row)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'call':<22}{'mode':<12}{'bare µs':>10}{'mode µs':>10}{'ratio':>8}{'+µs/chunk':>11}")
    for row in rows:
        chunk = row.get("added_us_per_chunk")
        print(f"{row['call']:<22}{row['mode']:<12}{row['bare_us']:>10}{row['mode_us']:>10}{row['ratio']:>8}"
              f"{'' if chunk is None else chunk:>11}")


if __name__ == "__main__":
    main()
