"""Collector cost per span of the OTTL of ``tokentrail collector pricing``, with the real binary, in one run.

    python bench/bench_collector_pricing.py [--spans 20000] [--rounds 3] [--models 10,100,500] [--json]

Each mode is collector-config.yaml + the test overlay (loopback ports, traces to the file exporter) with the
traces pipeline [memory_limiter, (pricing,) batch]: ``baseline`` without the pricing processor, ``N models``
with the statements generated for N rate-card models. The spans (OTLP/JSON, GenAI attributes, each model in
turn, so most spans match a statement deep in the list) are encoded before the clock starts; a run is timed
from the first POST until the file exporter has written every span. Reported per mode: spans/s (median over
rounds), the Collector's CPU (user + system) per span, and both as ratios to the baseline of the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from collector_fixtures import OVERLAY, SHIPPED_CONFIG, collector_binary, overlay_env  # noqa: E402

from tokentrail.processor.pricing import card as _card  # noqa: E402
from tokentrail.processor.pricing import ottl  # noqa: E402
from tokentrail.semconv import attributes as attr  # noqa: E402
from tokentrail.testing.collector import Collector, otlp_json, post_otlp  # noqa: E402

BATCH = 500  # spans per OTLP request, as an SDK's BatchSpanProcessor sends them
START = 1_780_000_000_000_000_000


def priced_models(n: int) -> list[tuple[str | None, str]]:
    """The first ``n`` rate-card names (sorted) that the card prices without a provider."""
    out = []
    card = _card.card()
    for name in card.known_names():
        if "*" in name or ":" in name:
            continue
        resolved = card.lookup(None, name, None)
        if resolved is not None and not resolved.per_call and resolved.rates_at(START) is not None:
            out.append((None, name.lower()))
            if len(out) == n:
                break
    return out


def bodies(models: list[tuple[str | None, str]], spans: int) -> list[bytes]:
    out = []
    for first in range(0, spans, BATCH):
        batch = []
        for i in range(first, min(first + BATCH, spans)):
            _, model = models[i % len(models)]
            batch.append((f"{i + 1:032x}", f"{i + 1:016x}", START + i, {
                attr.GEN_AI_OPERATION_NAME: "chat", attr.GEN_AI_REQUEST_MODEL: model,
                attr.GEN_AI_USAGE_INPUT_TOKENS: 1000 + i % 977, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 100 + i % 331,
                attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: i % 500,
            }))
        out.append(otlp_json(batch, service="bench"))
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_spans(path: Path) -> int:
    try:
        return path.read_bytes().count(b'"spanId"')
    except OSError:
        return 0


def run(binary: Path, workdir: Path, pricing: Path | None, requests: list[bytes], spans: int) -> tuple[float, float]:
    """(spans/s, Collector CPU seconds per span) for one Collector."""
    procs = ["memory_limiter", *([ottl.PROCESSOR] if pricing else []), "batch"]
    pipeline = workdir / "pipeline.yaml"
    pipeline.write_text(json.dumps({"service": {"pipelines": {"traces": {"processors": procs}}}}))
    env, ports, traces = overlay_env(workdir)
    configs = [SHIPPED_CONFIG, OVERLAY, *([pricing] if pricing else []), pipeline]
    url = f"http://127.0.0.1:{ports['OTLP_HTTP']}"
    with Collector(binary, configs, env=env, health_port=ports["HEALTH"], log_path=workdir / "collector.log") as c:
        cpu0 = cpu_s(c.proc.pid)
        t0 = time.perf_counter()
        for body in requests:
            post_otlp(url, body)
        while count_spans(traces) < spans:
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        cpu = cpu_s(c.proc.pid) - cpu0
    return spans / wall, cpu / spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="10,100,500")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    binary = collector_binary()
    sizes = [int(n) for n in args.models.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        modes: dict[str, tuple[Path | None, list[bytes], int]] = {"baseline": (None, [], 0)}
        for n in sizes:
            models = priced_models(n)
            config, _ = ottl.processor_config(models)
            path = tmp_path / f"pricing-{n}.yaml"
            path.write_text(ottl.render(config))
            statements = sum(len(g["statements"]) for g in config["trace_statements"])
            modes[f"{n} models"] = (path, bodies(models, args.spans), statements)
        modes["baseline"] = (None, modes[f"{sizes[0]} models"][1], 0)
        results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
        for r in range(args.rounds):
            for mode, (pricing, requests, _) in modes.items():
                workdir = tmp_path / f"{r}-{mode.replace(' ', '_')}"
                workdir.mkdir()
                results[mode].append(run(binary, workdir, pricing, requests, args.spans))
    base = results["baseline"]
    report = {}
    for mode, runs in results.items():
        report[mode] = {
            "statements": modes[mode][2],
            "spans_per_s": round(statistics.median(s for s, _ in runs)),
            "cpu_us_per_span": round(statistics.median(c for _, c in runs) * 1e6, 1),
            "throughput_vs_baseline": round(statistics.median(s / b[0] for (s, _), b in zip(runs, base)), 3),
            "cpu_vs_baseline": round(statistics.median(c / b[1] for (_, c), b in zip(runs, base)), 2),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.spans} spans x {args.rounds} rounds, {os.cpu_count()} CPUs, {binary.name}")
    print(f"{'mode':<12} {'statements':>10} {'spans/s':>9} {'vs base':>8} {'CPU us/span':>12} {'vs base':>8}")
    for mode, row in report.items():
        print(f"{mode:<12} {row['statements']:>10} {row['spans_per_s']:>9} {row['throughput_vs_baseline']:>8}"
              f" {row['cpu_us_per_span']:>12} {row['cpu_vs_baseline']:>8}")


if __name__ == "__main__":
    main()
