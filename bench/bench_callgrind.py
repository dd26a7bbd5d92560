"""CPU instructions per LLM call (valgrind callgrind): tokentrail's whole pipeline against the
bare SDKs and the peer instrumentations, all in one run.

    python bench/bench_callgrind.py [--calls 20] [--warmup 20] [--jobs 2] [--json > run.json]
    python bench/bench_callgrind.py --report run.json     # the tables of a saved run

Instruction counts, unlike CPU time, barely move on a loaded machine, so they are the figure to
compare. The fake provider runs in a child process NOT under valgrind; each mode runs in its own
``valgrind --tool=callgrind`` process (so one peer's patches cannot touch another's), started
with instrumentation off. Around the measured calls only, a small C helper (callgrind client
requests, compiled into bench/.cache/ on first use, loaded with ctypes) switches it on, zeroes
the counters and dumps them; warm-up calls are not counted. Callgrind counts every thread of
the process (``--separate-threads=no``) and each measured block ends with ``force_flush`` and a
metric collection, so the BatchSpanProcessor worker's export to the no-op exporter and the
reader's collection are included. The batch schedule
delay is raised so that, as at real speed, the measured spans leave in one export at the flush
rather than in batches cut by valgrind's slowdown.

Workload: real SDKs over loopback HTTP, an ~8 KB user prompt; openai ``chat.completions.create``
and a stream of 20 content chunks plus the usage chunk (``stream_options.include_usage`` asked
by the caller in every mode); anthropic ``messages.create`` and ``create(stream=True)`` with 20
text deltas. Every instrumented mode has a TracerProvider with a BatchSpanProcessor to a no-op
exporter and a MeterProvider with an InMemoryMetricReader; ``PYTHONHASHSEED=0`` and
``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` in every child.

Modes:
  bare, bare-repeat     the SDKs alone (run twice: the spread is the method's noise)
  openai-v2             opentelemetry-instrumentation-openai-v2 (the official contrib package's
                        old name), from --peers-dir
  genai-openai          opentelemetry-instrumentation-genai-openai (its current name)
  openllmetry           OpenLLMetry: opentelemetry-instrumentation-openai and -anthropic
  anthropic-native      the anthropic SDK's own spans (``open_telemetry={"tracer_provider": tp}``)
  genai-anthropic       opentelemetry-instrumentation-genai-anthropic (the official one)
  tokentrail            OpenAIInstrumentor + AnthropicInstrumentor, AttributionSpanProcessor +
                        CostSpanProcessor(BatchSpanProcessor(no-op)), metric_views(), calls
                        inside tokentrail.attribute(tenant=, feature=)
  tt-no-metrics, tt-no-export, tt-instrumentation
                        the same with stages removed; the differences are the per-stage breakdown
                        (and price_span is counted alone on each call's attributes)

Peers, for this benchmark only (not in the test extra):

    pip install opentelemetry-instrumentation-openai opentelemetry-instrumentation-anthropic \\
        opentelemetry-instrumentation-genai-openai opentelemetry-instrumentation-genai-anthropic
    pip install --target bench/.cache/peers --no-deps \\
        opentelemetry-instrumentation-openai-v2==2.4b0 opentelemetry-util-genai==1.1b0

openai-v2 2.4b0 imports ``opentelemetry.util.genai.instruments``, which util-genai 1.2b0 removed
while genai-openai needs 1.3b0: so openai-v2 gets its own directory, first on the path of its
child process only. A mode whose package is missing is reported as such. valgrind and gcc:
``apt-get install valgrind gcc``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
HELPER_C = HERE / "callgrind_client.c"
HELPER_SO = CACHE / "callgrind_client.so"

SERVER = (
    "import sys\n"
    "from tokentrail.testing import fake_provider\n"
    "from tokentrail.testing.openai_api import base_url\n"
    "s = fake_provider()\n"
    "print(base_url(s), s.url, flush=True)\n"
    "sys.stdin.read()\n"
    "s.stop()\n"
)

OPENAI_MODEL = "gpt-5.4-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-20250514"
CHUNKS = 20
# ~8 KB of prompt, about 2,000 tokens.
PROMPT = "".join(f"Ticket {i}: the customer reports that the export button does nothing on page {i}. "
                 for i in range(100))[:8000]
MESSAGES = [{"role": "user", "content": PROMPT}]
SCHEDULE_DELAY_MS = 3_600_000  # only force_flush exports (see the docstring)

SCENARIOS = ("openai create", "openai stream", "anthropic create", "anthropic stream")
PEERS = {"openai": ("openai-v2", "genai-openai", "openllmetry"),
         "anthropic": ("anthropic-native", "genai-anthropic", "openllmetry")}
# mode -> providers it covers
MODES = {
    "bare": ("openai", "anthropic"),
    "bare-repeat": ("openai", "anthropic"),
    "openai-v2": ("openai",),
    "genai-openai": ("openai",),
    "openllmetry": ("openai", "anthropic"),
    "anthropic-native": ("anthropic",),
    "genai-anthropic": ("anthropic",),
    "tokentrail": ("openai", "anthropic"),
    "tt-no-metrics": ("openai", "anthropic"),
    "tt-no-export": ("openai", "anthropic"),
    "tt-instrumentation": ("openai", "anthropic"),
}
# tokentrail variants: (AttributionSpanProcessor + attribute() scope, batch export, metrics)
TOKENTRAIL = {
    "tokentrail": (True, True, True),
    "tt-no-metrics": (True, True, False),
    "tt-no-export": (True, False, False),
    "tt-instrumentation": (False, False, False),
}
STAGES = ("instrumentation", "attribution", "pricing", "metrics", "export")


# --------------------------------------------------------------------------------------------
# child: one mode, under valgrind
# --------------------------------------------------------------------------------------------
class Callgrind:
    """The client requests; without valgrind (a dry run) they do nothing."""

    def __init__(self, path: str) -> None:
        self._lib = ctypes.CDLL(path)

    def measure(self, label: str) -> contextlib.AbstractContextManager:
        @contextlib.contextmanager
        def block():
            self._lib.start()
            self._lib.zero()
            yield
            self._lib.dump(label.encode())
            self._lib.stop()
        return block()


def _exporter():
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        """No-op export that keeps a count and the last span (for the run's sanity checks)."""

        count = 0
        last = None

        def export(self, spans):
            self.count += len(spans)
            if spans:
                self.last = spans[-1]
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    return CountingExporter()


class Setup:
    """What one mode installs: providers, instrumentors, the scope around each call."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.tp = self.mp = self.reader = None
        self.exporter = None
        self.anthropic_telemetry: Any = None  # the SDK default: spans only with a global provider (none here)
        self.scope: Callable[[], Any] = contextlib.nullcontext

    def _providers(self, views: Any = ()) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        self.reader = InMemoryMetricReader()
        self.mp = MeterProvider(metric_readers=[self.reader], views=views, shutdown_on_exit=False)
        self.tp = TracerProvider(shutdown_on_exit=False)
        self.exporter = _exporter()

    def _batch(self):
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        return BatchSpanProcessor(self.exporter, schedule_delay_millis=SCHEDULE_DELAY_MS)

    def _instrument(self, instrumentor: Any) -> None:
        instrumentor.instrument(tracer_provider=self.tp, meter_provider=self.mp, skip_dep_check=True)

    def install(self) -> None:
        mode = self.mode
        if mode.startswith("bare"):
            return
        if mode in TOKENTRAIL:
            self._tokentrail(*TOKENTRAIL[mode])
            return
        self._providers()
        self.tp.add_span_processor(self._batch())
        if mode == "openai-v2":
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

            self._instrument(OpenAIInstrumentor())
        elif mode == "genai-openai":
            from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

            self._instrument(OpenAIInstrumentor())
        elif mode == "genai-anthropic":
            from opentelemetry.instrumentation.genai.anthropic import AnthropicInstrumentor

            self._instrument(AnthropicInstrumentor())
        elif mode == "openllmetry":
            from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
            from opentelemetry.instrumentation.openai import OpenAIInstrumentor

            self._instrument(OpenAIInstrumentor())
            self._instrument(AnthropicInstrumentor())
        elif mode == "anthropic-native":
            self.anthropic_telemetry = {"tracer_provider": self.tp}
        else:
            raise SystemExit(f"unknown mode {mode}")

    def _tokentrail(self, attribution: bool, export: bool, metrics: bool) -> None:
        import tokentrail
        from tokentrail.instrumentation.anthropic import AnthropicInstrumentor
        from tokentrail.instrumentation.openai import OpenAIInstrumentor
        from tokentrail.processor.attribution import AttributionSpanProcessor
        from tokentrail.processor.cost import CostSpanProcessor
        from tokentrail.processor.metrics import metric_views

        self._providers(metric_views() if metrics else ())
        if attribution:
            self.tp.add_span_processor(AttributionSpanProcessor())
            self.scope = lambda: tokentrail.attribute(tenant="acme", feature="summarize")
        # Without export the CostSpanProcessor stays (next_processor=None), so the
        # instrumentation does not fall back to recording metrics itself.
        self.tp.add_span_processor(CostSpanProcessor(self._batch() if export else None, meter_provider=self.mp,
                                                     record_metrics=metrics))
        self._instrument(OpenAIInstrumentor())
        self._instrument(AnthropicInstrumentor())

    def flush(self) -> None:
        if self.tp is not None:
            self.tp.force_flush()
        # A collection too, so work a mode defers to the reader's collection (tokentrail's
        # histogram and counter sums) is counted, as a periodic reader would run it.
        if self.reader is not None:
            self.reader.get_metrics_data()

    def metric_points(self) -> int:
        """Data points the reader holds (checks that an ablation really records no metrics)."""
        data = self.reader.get_metrics_data() if self.reader is not None else None
        if data is None:
            return 0
        return sum(len(metric.data.data_points) for rm in data.resource_metrics for sm in rm.scope_metrics
                   for metric in sm.metrics)


def _calls(setup: Setup, urls: dict[str, str], providers: tuple[str, ...]) -> dict[str, Callable[[], Any]]:
    calls: dict[str, Callable[[], Any]] = {}
    if "openai" in providers:
        import openai

        from tokentrail.testing.openai_api import HEADER

        client = openai.OpenAI(base_url=urls["openai"], api_key="bench", max_retries=0)
        usage = {"prompt_tokens": 2000, "cached_tokens": 500, "completion_tokens": 200}
        plain = {HEADER: json.dumps(usage)}
        streamed = {HEADER: json.dumps({**usage, "chunk_count": CHUNKS, "content": "tok " * CHUNKS})}

        def openai_stream() -> None:
            for _ in client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, stream=True,
                                                    stream_options={"include_usage": True},
                                                    extra_headers=streamed):
                pass

        calls["openai create"] = lambda: client.chat.completions.create(
            model=OPENAI_MODEL, messages=MESSAGES, extra_headers=plain)
        calls["openai stream"] = openai_stream
    if "anthropic" in providers:
        import anthropic

        from tokentrail.testing.anthropic_api import DELTAS_HEADER

        client_a = anthropic.Anthropic(base_url=urls["anthropic"], api_key="bench", max_retries=0,
                                       open_telemetry=setup.anthropic_telemetry,
                                       default_headers={DELTAS_HEADER: str(CHUNKS)})

        def anthropic_stream() -> None:
            for _ in client_a.messages.create(model=ANTHROPIC_MODEL, max_tokens=1024, messages=MESSAGES,
                                              stream=True):
                pass

        calls["anthropic create"] = lambda: client_a.messages.create(
            model=ANTHROPIC_MODEL, max_tokens=1024, messages=MESSAGES)
        calls["anthropic stream"] = anthropic_stream
    return calls


def _pricing_input(span: Any) -> tuple[dict[str, Any], int]:
    """The exported span's attributes less the cost status, so price_span prices them again in full."""
    from tokentrail.semconv import attributes as attr

    attributes = dict(span.attributes)
    attributes.pop(attr.TOKENTRAIL_COST_STATUS, None)
    return attributes, span.start_time


def child(args: argparse.Namespace) -> None:
    cg = Callgrind(args.helper)
    urls = {"openai": args.openai_url, "anthropic": args.anthropic_url}
    setup = Setup(args.child)
    out: dict[str, Any] = {"mode": args.child, "scenarios": {}, "seconds": {}}
    clock = time.monotonic()
    try:
        setup.install()
    except ImportError as exc:
        if args.child in TOKENTRAIL:
            raise  # tokentrail itself must import: a broken tree is a failure, not a missing peer
        out["missing"] = str(exc)
        Path(args.child_out).write_text(json.dumps(out))
        return
    calls = _calls(setup, urls, MODES[args.child])
    out["seconds"]["start-up"] = round(time.monotonic() - clock, 1)
    for name, call in calls.items():
        clock = time.monotonic()
        for _ in range(args.warmup):
            with setup.scope():
                call()
        setup.flush()
        out["seconds"][f"{name} warm-up"] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()
        before = setup.exporter.count if setup.exporter else 0
        with cg.measure(name):
            for _ in range(args.calls):
                with setup.scope():
                    call()
            setup.flush()  # the batch worker's export belongs to the calls
        out["seconds"][name] = round(time.monotonic() - clock, 1)
        info: dict[str, Any] = {}
        if setup.exporter is not None:
            info["spans_per_call"] = (setup.exporter.count - before) / args.calls
            last = setup.exporter.last
            if last is not None:
                info["last_span"] = last.name
                if args.child == "tokentrail":
                    from tokentrail.semconv import attributes as attr

                    info["tenant"] = last.attributes.get(attr.TOKENTRAIL_TENANT)
                    info["nano_usd"] = last.attributes.get(attr.TOKENTRAIL_COST_NANO_USD)
                    info["_pricing_input"] = _pricing_input(last)
        out["scenarios"][name] = info
    out["metric_points"] = setup.metric_points()
    if args.child == "tokentrail":
        _measure_pricing(cg, out, args)
    for info in out["scenarios"].values():
        info.pop("_pricing_input", None)
    Path(args.child_out).write_text(json.dumps(out))


def _measure_pricing(cg: Callgrind, out: dict[str, Any], args: argparse.Namespace) -> None:
    """price_span alone, warm, on each scenario's real call attributes (the pricing stage)."""
    from tokentrail.processor.pricing import price_span

    for name, info in out["scenarios"].items():
        attributes, start_ns = info["_pricing_input"]
        for _ in range(args.warmup):
            price_span(attributes, start_ns)
        with cg.measure(f"price_span {name}"):
            for _ in range(args.calls):
                price_span(attributes, start_ns)


# --------------------------------------------------------------------------------------------
# parent: compile, serve, run every mode, report
# --------------------------------------------------------------------------------------------
def build_helper() -> Path:
    CACHE.mkdir(exist_ok=True)
    if not HELPER_SO.exists() or HELPER_SO.stat().st_mtime < HELPER_C.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(HELPER_SO), str(HELPER_C)], check=True)
    return HELPER_SO


def read_dumps(folder: Path, mode: str) -> dict[str, int]:
    """Instructions (Ir) per dump label from the callgrind output files of one mode (the
    program-termination dump, with no label of ours, is ignored)."""
    counts: dict[str, int] = {}
    for path in folder.glob(f"{mode}.*.out*"):
        text = path.read_text()
        label = re.search(r"^desc: Trigger: Client Request: (.+)$", text, re.M)
        total = re.search(r"^totals: (\d+)$", text, re.M)
        if label and total:
            counts[label.group(1).strip()] = int(total.group(1))
    return counts


def run_mode(mode: str, args: argparse.Namespace, urls: tuple[str, str], folder: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}
    if mode == "openai-v2":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(args.peers_dir), env.get("PYTHONPATH")) if p)
    child_out = folder / f"{mode}.json"
    python = os.path.realpath(sys.executable)  # the interpreter itself, not a shim script
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=no", "--dump-line=no",
           f"--callgrind-out-file={folder}/{mode}.%p.out", python, str(Path(__file__).resolve()),
           "--child", mode, "--child-out", str(child_out), "--helper", str(args.helper),
           "--openai-url", urls[0], "--anthropic-url", urls[1],
           "--calls", str(args.calls), "--warmup", str(args.warmup)]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not child_out.exists():
        tail = "\n".join((proc.stderr or "").splitlines()[-15:])
        raise RuntimeError(f"mode {mode} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(child_out.read_text())
    result["instructions"] = {label: total / args.calls for label, total in read_dumps(folder, mode).items()}
    result["wall_seconds"] = round(time.monotonic() - started)
    print(f"{mode}: done in {result['wall_seconds']} s", file=sys.stderr)
    return result


def analyse(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per scenario: every mode's count and addition to bare, the lightest peer, tokentrail's stages."""
    ir = {mode: r.get("instructions", {}) for mode, r in results.items()}
    rows: dict[str, Any] = {}
    for scenario in SCENARIOS:
        bare = ir["bare"].get(scenario)
        if bare is None:
            continue
        row: dict[str, Any] = {"bare": bare, "modes": {}}
        for mode in results:
            value = ir[mode].get(scenario)
            if value is not None and mode != "bare":
                row["modes"][mode] = {"instructions": value, "adds": value - bare}
        if scenario in ir.get("bare-repeat", {}):
            row["bare_repeat_diff_pct"] = (ir["bare-repeat"][scenario] - bare) / bare * 100
        peers = {m: row["modes"][m]["adds"] for m in PEERS[scenario.split()[0]] if m in row["modes"]}
        if peers:
            lightest = min(peers, key=peers.get)
            row["lightest_peer"] = lightest
            if "tokentrail" in row["modes"]:
                row["tokentrail_vs_lightest"] = row["modes"]["tokentrail"]["adds"] / peers[lightest]
        need = ("tokentrail", "tt-no-metrics", "tt-no-export", "tt-instrumentation")
        pricing = ir.get("tokentrail", {}).get(f"price_span {scenario}")
        if all(scenario in ir.get(m, {}) for m in need) and pricing is not None:
            full, no_metrics, no_export, instr = (ir[m][scenario] for m in need)
            row["stages"] = {
                "instrumentation": instr - bare - pricing,
                "attribution": no_export - instr,
                "pricing": pricing,
                "metrics": full - no_metrics,
                "export": no_metrics - no_export,
            }
        rows[scenario] = row
    return rows


def _m(value: float) -> str:
    return f"{value / 1e6:.2f} M"


def _plus(value: float) -> str:
    return f"{value / 1e6:+.2f} M"


def report(rows: dict[str, Any], results: dict[str, Any], args: argparse.Namespace, meta: dict[str, Any]) -> None:
    print(f"\nCPU instructions per call (callgrind, client process only), {args.calls} calls per scenario and "
          f"mode after {args.warmup} warm-up calls.\ncommit {meta['commit']}, "
          f"tokentrail from {meta['tokentrail_from']}; "
          f"Python {meta['python']}, {meta['valgrind']}; {meta['versions']}\n")
    print("| scenario | bare SDK | lightest peer (adds) | OpenLLMetry (adds) | tokentrail whole pipeline (adds) |")
    print("|---|---:|---|---:|---|")
    for scenario, row in rows.items():
        modes = row["modes"]
        lightest = row.get("lightest_peer")
        light = f"{lightest}: {_plus(modes[lightest]['adds'])}" if lightest else "-"
        oll = _plus(modes["openllmetry"]["adds"]) if "openllmetry" in modes else "-"
        tt = "-"
        if "tokentrail" in modes:
            tt = _plus(modes["tokentrail"]["adds"])
            if "tokentrail_vs_lightest" in row:
                tt += f" ({row['tokentrail_vs_lightest']:.1f}x the lightest)"
        print(f"| {scenario} | {_m(row['bare'])} | {light} | {oll} | {tt} |")

    print("\nEvery mode (M instructions per call, adds vs bare):\n")
    shown = [m for m in MODES if m != "bare" and any(m in row["modes"] for row in rows.values())]
    print("| mode | " + " | ".join(rows) + " |")
    print("|---|" + "---:|" * len(rows))
    print("| bare | " + " | ".join(_m(row["bare"]) for row in rows.values()) + " |")
    for mode in shown:
        cells = [f"{_m(row['modes'][mode]['instructions'])} ({_plus(row['modes'][mode]['adds'])})"
                 if mode in row["modes"] else "-" for row in rows.values()]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    missing = {m: r["missing"] for m, r in results.items() if "missing" in r}
    for mode, why in missing.items():
        print(f"\n{mode}: not measured, not installed ({why})")

    staged = {s: row["stages"] for s, row in rows.items() if "stages" in row}
    if staged:
        print("\ntokentrail, where the added instructions go (M per call):\n")
        print("| stage | " + " | ".join(staged) + " |")
        print("|---|" + "---:|" * len(staged))
        for stage in STAGES:
            print(f"| {stage} | " + " | ".join(_plus(st[stage]) for st in staged.values()) + " |")
        print("| total (= tokentrail adds) | " + " | ".join(_plus(sum(st.values())) for st in staged.values()) + " |")

    diffs = {s: row["bare_repeat_diff_pct"] for s, row in rows.items() if "bare_repeat_diff_pct" in row}
    if diffs:
        print("\nrepeatability, bare run twice: " + ", ".join(f"{s} {d:+.3f}%" for s, d in diffs.items()))
    checks = []
    for mode, r in results.items():
        for scenario, info in r.get("scenarios", {}).items():
            if "spans_per_call" in info:
                checks.append(f"{mode}/{scenario} {info['spans_per_call']:g}")
    if checks:
        print("exported spans per call: " + ", ".join(checks))
    points = {m: r["metric_points"] for m, r in results.items() if "metric_points" in r}
    print("metric series the reader holds at the end (data points, not calls): "
          + ", ".join(f"{m} {n}" for m, n in points.items()))
    tt = results.get("tokentrail", {}).get("scenarios", {})
    if tt:
        print("tokentrail's last span per scenario: " + ", ".join(
            f"{s} tenant={i.get('tenant')} nano_usd={i.get('nano_usd')}" for s, i in tt.items()))


def _meta() -> dict[str, Any]:
    """Versions, and the commit of this script's checkout (flagged when the tokentrail code in it
    has uncommitted changes), with where tokentrail itself is imported from."""
    from importlib.metadata import PackageNotFoundError, version

    import tokentrail

    names = ("openai", "anthropic", "opentelemetry-sdk", "opentelemetry-instrumentation-genai-openai",
             "opentelemetry-instrumentation-genai-anthropic", "opentelemetry-instrumentation-openai",
             "opentelemetry-instrumentation-anthropic")
    found = {}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=HERE, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "../tokentrail", "../instrumentation", "../processor", "../semconv"):
        commit += " + uncommitted changes"
    vg = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    return {"commit": commit, "tokentrail_from": str(Path(tokentrail.__file__).parent),
            "python": sys.version.split()[0], "valgrind": vg,
            "versions": ", ".join(f"{n} {v}" for n, v in found.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20, help="measured calls per scenario and mode")
    ap.add_argument("--warmup", type=int, default=20, help="uncounted calls before each measured block")
    ap.add_argument("--jobs", type=int, default=2, help="valgrind processes at once (counts do not depend on it)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    ap.add_argument("--peers-dir", type=Path, default=CACHE / "peers", help="where openai-v2 is installed")
    ap.add_argument("--keep", type=Path, help="keep the callgrind output files in this folder")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    ap.add_argument("--report", type=Path, help="print the tables of a saved --json run, measure nothing")
    # child side (under valgrind)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--helper", help=argparse.SUPPRESS)
    ap.add_argument("--openai-url", help=argparse.SUPPRESS)
    ap.add_argument("--anthropic-url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.report:
        saved = json.loads(args.report.read_text())
        args.calls, args.warmup = saved["calls"], saved["warmup"]
        report(saved["scenarios"], saved["runs"], args, saved["meta"])
        return

    for tool in ("valgrind", "gcc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install valgrind gcc")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown or "bare" not in modes:
        raise SystemExit(f"--modes must include bare and only: {', '.join(MODES)}")
    args.helper = build_helper()
    meta = _meta()  # before the run: the checkout may move while it runs
    folder = args.keep or Path(tempfile.mkdtemp(prefix="callgrind-", dir=CACHE))
    folder.mkdir(parents=True, exist_ok=True)
    # cwd: "-c" puts the working directory first on sys.path; tokentrail must come from the install.
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=CACHE)
    try:
        urls = tuple(server.stdout.readline().split())
        # The slowest first, so the jobs finish together.
        order = sorted(modes, key=lambda m: (-len(MODES[m]), m.startswith("bare")))
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {m: pool.submit(run_mode, m, args, urls, folder) for m in order}
            results = {m: futures[m].result() for m in modes}
    finally:
        server.stdin.close()
        server.wait(timeout=30)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    rows = analyse(results)
    if args.json:
        print(json.dumps({"meta": meta, "calls": args.calls, "warmup": args.warmup, "scenarios": rows,
                          "runs": results}))
        return
    report(rows, results, args, meta)


if __name__ == "__main__":
    main()
