"""The demo's seeded multi-tenant workload, through the real pipeline into a ledger.

The real openai SDK talks over loopback HTTP to tokentrail's fake provider; tokentrail's OpenAI
instrumentation makes the spans; the attribution and cost processors own and price them; a
``BatchSpanProcessor`` feeds the ``LedgerSpanExporter``. Usage per call is scripted (the fake's
``x-fake-openai`` header), so every run writes the same numbers. The workload shows the stories
people pay for: cache-hit dispersion between tenants on the same model, a long-prompt feature,
an agent loop with a runaway tail, a retry storm, a silent fallback to a pricier model, spend
nobody owns, a self-hosted model no rate card prices, and a runaway retry loop stopped by a task
budget before it is paid for. Then what ``tokentrail savings`` finds: an agent run that fails, a
stream billed before it broke, answers with no ``max_tokens`` that run on, a prompt that grows week
after week, and a nightly job the savings config beside the ledger marks batch-eligible. Each
request is placed on the workload's own clock, spread over the past ``DAYS`` days (before today's
UTC midnight, so a rerun on the same day writes the same times): ``--since`` comparisons and
``--by day`` have something to show.
"""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import openai
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind

import tokentrail
from tokentrail import telemetry
from tokentrail.cli.demo import SERVICE
from tokentrail.instrumentation.openai import OpenAIInstrumentor
from tokentrail.ledger.exporter import LedgerSpanExporter
from tokentrail.ledger.queries.savings import CONFIG_SUFFIX as SAVINGS_SUFFIX
from tokentrail.processor.attribution import AttributionSpanProcessor
from tokentrail.processor.cost import CostSpanProcessor
from tokentrail.testing import fake_provider
from tokentrail.testing.openai_api import base_url

MODEL = "gpt-5.4-mini"
PRICIER_MODEL = "gpt-5.4"
DIGEST_MODEL = "gpt-5.4"
RUNAWAY_TASK = "invoice-extractor"
RUNAWAY_TASK_ID = "invoice-runaway-001"
RUNAWAY_BUDGET_USD = 0.05
# the runaway agent's prompt: a pasted invoice, and an answer that is never valid JSON
INVOICE_PROMPT = "Extract the invoice fields as JSON. " + "Line item, qty 1. " * 400
NOT_JSON = "Sure! Here is the data you asked for: {invoice: 42"
SELF_HOSTED_MODEL = "hooli-llama-70b"  # on no rate card: its calls are counted, never $0
BATCH_TASK = "nightly-summaries"  # needs no interactive answer: batch-eligible in the savings config
#: The savings config written beside the ledger (``tokentrail.db`` -> ``tokentrail.savings.yaml``).
SAVINGS_CONFIG = (f"# tokentrail savings: written by tokentrail demo\nbatch_eligible: [{BATCH_TASK}]"
                  "  # features or tasks that need no interactive answer\n")
DAYS = 28
_DAY_NS = 86400 * 10**9


class SeededIds(IdGenerator):
    """Deterministic trace and span ids, so a seed reproduces the same ledger."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed ^ 0x5EED)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


@dataclass(frozen=True)
class Tenant:
    name: str
    cache_hit: tuple[float, float]  # range of the share of the prompt served from cache
    requests: int


# Four tenants on the same model and price card; what differs is how their prompts cache.
TENANTS = (
    Tenant("acme", (0.92, 0.99), 30),  # cache-warm: a stable system prompt, short user turns
    Tenant("globex", (0.0, 0.15), 30),  # cache-cold: a per-request preamble defeats the cache
    Tenant("initech", (0.55, 0.75), 25),
    Tenant("umbrella", (0.75, 0.9), 25),
)
BY_NAME = {t.name: t for t in TENANTS}


class Backdated(SpanExporter):
    """Moves every span of a trace by its trace's offset (the workload's clock) on the way to the ledger."""

    def __init__(self, inner: SpanExporter, offsets: dict[int, int]) -> None:
        self.inner = inner
        self.offsets = offsets

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([_moved(s, self.offsets.get(s.context.trace_id, 0)) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _moved(span: ReadableSpan, offset: int) -> ReadableSpan:
    if not offset:
        return span
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=span.resource,
        attributes=span.attributes, links=span.links, kind=span.kind, status=span.status,
        events=[Event(e.name, e.attributes, e.timestamp + offset) for e in span.events],
        start_time=span.start_time + offset, end_time=None if span.end_time is None else span.end_time + offset,
        instrumentation_scope=span.instrumentation_scope,
    )


def first_trace_id(seed: int) -> str:
    """The first trace id a seed's workload writes (the SDK draws a root's trace id first)."""
    return format(SeededIds(seed).generate_trace_id(), "032x")


class Workload:
    def __init__(self, client: Any, tracer: Any, seed: int, offsets: dict[int, int] | None = None) -> None:
        self.client = client
        self.tracer = tracer
        self.rng = random.Random(seed)
        self.more = random.Random(seed ^ 0x5A71)  # the savings stories' own stream
        self.clock = random.Random(seed ^ 0xC10C)  # apart from rng: placing requests changes no usage
        today = time.time_ns() // _DAY_NS * _DAY_NS
        self.first_day_ns = today - DAYS * _DAY_NS
        self.offsets = {} if offsets is None else offsets  # trace id -> ns to move its spans by
        self.calls = 0
        self.breaker: dict[str, Any] | None = None  # what the runaway loop's breaker stopped

    def chat(self, model: str = MODEL, *, prompt: int, output: int, cached: int = 0, status: int = 200,
             error_type: str | None = None, messages: list[dict[str, str]] | None = None,
             content: str | None = None, max_tokens: int | None = None) -> Any:
        """One chat completion; the fake answers with exactly this usage (or this error)."""
        script: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": output, "cached_tokens": cached}
        if content is not None:
            script["content"] = content
        if status != 200:
            script = {"status": status, "error_type": error_type or "server_error"}
        extra: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
        self.calls += 1
        try:
            return self.client.chat.completions.create(
                model=model,
                messages=messages or [{"role": "user", "content": "..."}],
                extra_headers={"x-fake-openai": json.dumps(script)},
                **extra,
            )
        except tokentrail.BudgetExceeded:
            self.calls -= 1  # stopped before sending: not a call
            raise

    def cached(self, tenant: str, prompt: int) -> int:
        """Cache reads for this tenant's prompt (providers cache in 128-token blocks)."""
        return int(prompt * self.rng.uniform(*BY_NAME[tenant].cache_hit)) // 128 * 128

    @contextmanager
    def request(self, name: str, kind: SpanKind = SpanKind.SERVER, day: int | None = None) -> Iterator[Any]:
        """A request's root span, placed on a day of the past ``DAYS`` (``day``: that one), in working hours."""
        with self.tracer.start_as_current_span(name, kind=kind) as span:
            day = self.clock.randrange(DAYS) if day is None else day
            when = self.first_day_ns + day * _DAY_NS + self.clock.randrange(7 * 3600, 20 * 3600) * 10**9
            self.offsets[span.get_span_context().trace_id] = when - span.start_time
            yield span

    # --- the stories -------------------------------------------------------------------------
    def support_chat(self) -> None:
        """Same product, same model, same prices: per-tenant cache hits decide what a request costs."""
        for tenant in TENANTS:
            for i in range(tenant.requests):
                prompt = self.rng.randint(3000, 6000)
                cached = self.cached(tenant.name, prompt)
                with self.request("POST /api/support/chat"), tokentrail.attribute(
                    tenant=tenant.name, feature="support-chat", team="support", user=f"{tenant.name}-u{i % 7}"
                ):
                    self.chat(prompt=prompt, output=self.rng.randint(150, 400), cached=cached)

    def doc_review(self) -> None:
        """A feature that is expensive because its prompts are long (whole contracts pasted in)."""
        for i in range(12):
            tenant = TENANTS[i % 2 + 2].name
            with self.request("POST /api/documents/review"), tokentrail.attribute(
                tenant=tenant, feature="doc-review", team="legal-ai", user=f"{tenant}-u{i % 3}"
            ):
                self.chat(prompt=self.rng.randint(60_000, 110_000), output=self.rng.randint(800, 1500))

    def research_agent(self) -> None:
        """An agent loop: most runs finish in a few steps; a few keep re-sending the whole context."""
        runaway = {2, 10, 18}  # a few runs of one tenant (initech)
        for run in range(24):
            tenant = TENANTS[run % 4].name
            steps = 10 if run in runaway else self.rng.randint(3, 5)
            with self.request("POST /api/research"), tokentrail.attribute(
                tenant=tenant, feature="research", team="agents", user=f"{tenant}-u{run % 5}"
            ), tokentrail.task("research-agent", id=f"research-{run:03d}"):
                context = self.rng.randint(6000, 8000)
                for step in range(steps):
                    self.chat(prompt=context, output=self.rng.randint(200, 500), cached=self.cached(tenant, context))
                    with self.tracer.start_as_current_span("tool web_search"):
                        pass
                    context += self.rng.randint(2500, 3500)  # the tool result goes back into the prompt

    def nightly_digest(self) -> None:
        """A retry storm: a background job re-sends its 3,200-token prompt on every failure."""
        for doc in range(8):
            attempts = self.rng.randint(3, 7)
            tenant = TENANTS[doc % 4].name
            with self.request("POST /jobs/nightly-digest"), tokentrail.attribute(
                tenant=tenant, feature="digest", team="platform"
            ), tokentrail.task("nightly-digest", id=f"digest-{doc:03d}"):
                for attempt in range(attempts):
                    with tokentrail.retry(attempt):
                        try:
                            if attempt < attempts - 1 and attempt % 2 == 0:
                                self.chat(DIGEST_MODEL, status=429, error_type="rate_limit_exceeded", prompt=0, output=0)
                            else:
                                # answered (and billed), but the job's output check rejects all but the last
                                self.chat(DIGEST_MODEL, prompt=3200, output=self.rng.randint(300, 600),
                                          cached=self.cached(tenant, 3200))
                        except openai.RateLimitError:
                            pass

    def summarize_with_fallback(self) -> None:
        """Silent fallback: when the cheap model fails, the call is re-sent to a pricier one."""
        for i in range(16):
            tenant = TENANTS[i % 4].name
            with self.request("POST /api/summarize"), tokentrail.attribute(
                tenant=tenant, feature="summarize", team="platform", user=f"{tenant}-u{i % 4}"
            ), tokentrail.task("summarize", id=f"summarize-{i:03d}"):
                prompt, output = self.rng.randint(4000, 8000), self.rng.randint(300, 700)
                cached = self.cached(tenant, prompt)
                if i % 3 == 0:
                    try:
                        self.chat(status=503, error_type="server_error", prompt=0, output=0)
                    except openai.APIStatusError:
                        with tokentrail.fallback(MODEL):
                            self.chat(PRICIER_MODEL, prompt=prompt, output=output, cached=cached)
                else:
                    self.chat(prompt=prompt, output=output, cached=cached)

    def unattributed(self) -> None:
        """Scripts and CI evaluations with no owner tags: visible as unattributed, never hidden."""
        for _ in range(14):
            with self.request("eval-script", SpanKind.INTERNAL):
                self.chat(prompt=self.rng.randint(5000, 9000), output=self.rng.randint(400, 900))

    def self_hosted(self) -> None:
        """A tenant served by a self-hosted model: tokens are counted, the cost is unknown (not $0)."""
        for i in range(6):
            with self.request("POST /api/on-prem/summarize"), tokentrail.attribute(
                tenant="hooli", feature="on-prem-summaries", team="platform", user=f"hooli-u{i % 2}"
            ):
                self.chat(SELF_HOSTED_MODEL, prompt=self.rng.randint(2000, 4000), output=self.rng.randint(200, 400))

    def runaway_loop(self) -> None:
        """The $2,847 loop, under a circuit breaker: an agent keeps asking again while the answer is
        not valid JSON, re-sending the whole conversation each time; the task's budget stops the
        call that could cross it before it is sent."""
        messages = [{"role": "user", "content": INVOICE_PROMPT}]
        state = None
        try:
            with self.request("POST /api/invoices/extract"), tokentrail.attribute(
                tenant="globex", feature="invoice-extract", team="agents", user="globex-u1"
            ), tokentrail.task(RUNAWAY_TASK, id=RUNAWAY_TASK_ID, budget_usd=RUNAWAY_BUDGET_USD) as state:
                for attempt in range(1000):  # a safety net only: the breaker stops it long before
                    chars = sum(len(m["content"]) for m in messages)
                    with tokentrail.retry(attempt):
                        # the fake bills about 4 characters a token, as real tokenizers do for English
                        reply = self.chat(prompt=chars // 4 + 8, output=300, max_tokens=400, messages=messages,
                                          content=NOT_JSON)
                    text = reply.choices[0].message.content
                    try:
                        json.loads(text)
                        return
                    except ValueError:
                        messages += [{"role": "assistant", "content": text},
                                     {"role": "user", "content": "That was not valid JSON. Answer again with JSON only."}]
        except tokentrail.BudgetExceeded as exc:
            self.breaker = {"task": RUNAWAY_TASK, "task_id": RUNAWAY_TASK_ID, "limit": exc.limit_name,
                            "limit_usd": exc.limit, "spent_nano_usd": state.spent_nano if state else None,
                            "calls": state.calls if state else None, "outcome": state.outcome if state else None}

    # --- what `tokentrail savings` finds (placed in the last two weeks, its default period) -------
    def recent_day(self) -> int:
        return DAYS - 1 - self.more.randrange(14)

    def more_cached(self, tenant: str, prompt: int) -> int:
        """``cached`` on the savings stories' own stream: each tenant keeps its cache-hit range."""
        return int(prompt * self.more.uniform(*BY_NAME[tenant].cache_hit)) // 128 * 128

    def ticket_triage(self) -> None:
        """An agent whose tool fails on some tickets: the runs end in an error, their calls paid for nothing."""
        for run in range(6):
            tenant = TENANTS[run % 4].name
            try:
                with self.request("POST /api/tickets/triage", day=self.recent_day()), tokentrail.attribute(
                    tenant=tenant, feature="ticket-triage", team="support", user=f"{tenant}-u{run % 3}"
                ), tokentrail.task("ticket-triage", id=f"triage-{run:03d}"):
                    for _ in range(2 + run % 2):
                        prompt = self.more.randint(2500, 4000)
                        self.chat(prompt=prompt, output=self.more.randint(150, 300), max_tokens=500,
                                  cached=self.more_cached(tenant, prompt))
                    if run % 2 == 0:
                        raise LookupError("the CRM lookup tool timed out")
            except LookupError:
                pass

    def live_answers(self) -> None:
        """Streamed answers; a few streams break after the usage arrived: an error, yet billed."""
        for i in range(8):
            tenant = TENANTS[i % 4].name
            broken = i % 3 == 0
            with self.request("POST /api/answers/stream", day=self.recent_day()), tokentrail.attribute(
                tenant=tenant, feature="live-answers", team="support", user=f"{tenant}-u{i % 5}"
            ):
                prompt = self.more.randint(1500, 2500)
                script = {"prompt_tokens": prompt, "completion_tokens": self.more.randint(200, 400),
                          "cached_tokens": self.more_cached(tenant, prompt)}
                if broken:
                    script["fail_after"] = 6  # every chunk, the usage one included, then the API's in-stream error
                self.calls += 1
                try:
                    for _ in self.client.chat.completions.create(
                            model=MODEL, messages=[{"role": "user", "content": "..."}], stream=True,
                            stream_options={"include_usage": True}, max_tokens=600,
                            extra_headers={"x-fake-openai": json.dumps(script)}):
                        pass
                except openai.APIError:
                    pass

    def release_notes(self) -> None:
        """Release notes with no ``max_tokens``: most answers are short, a few run on for pages."""
        for i in range(14):
            tenant = TENANTS[i % 4].name
            with self.request("POST /api/release-notes", day=self.recent_day()), tokentrail.attribute(
                tenant=tenant, feature="release-notes", team="product", user=f"{tenant}-u{i % 2}"
            ):
                long = i in (4, 9)
                prompt = self.more.randint(1500, 2500)
                self.chat(prompt=prompt, cached=self.more_cached(tenant, prompt),
                          output=self.more.randint(9000, 12000) if long else self.more.randint(250, 450))

    def sales_assistant(self) -> None:
        """Prompt inflation: history and retrieved blocks added week after week."""
        for day in range(DAYS):
            with self.request("POST /api/sales/assist", day=day), tokentrail.attribute(
                tenant="umbrella", feature="sales-assistant", team="sales", user=f"umbrella-u{day % 4}"
            ):
                prompt = 1800 + 220 * day + self.more.randint(0, 200)
                self.chat(prompt=prompt, output=self.more.randint(250, 400), max_tokens=600,
                          cached=self.more_cached("umbrella", prompt))

    def nightly_summaries(self) -> None:
        """A nightly job no one waits for, sent at interactive prices (batch-eligible in the savings config)."""
        for night in range(14):
            tenant = TENANTS[night % 4].name
            with self.request("cron nightly-summaries", SpanKind.INTERNAL, day=DAYS - 14 + night), \
                    tokentrail.attribute(tenant=tenant, feature="account-summaries", team="platform"), \
                    tokentrail.task(BATCH_TASK, id=f"summaries-{night:03d}"):
                prompt = self.more.randint(8000, 12000)
                self.chat(prompt=prompt, output=self.more.randint(600, 900), max_tokens=1200,
                          cached=self.more_cached(tenant, prompt))

    def run(self) -> None:
        self.support_chat()
        self.doc_review()
        self.research_agent()
        self.nightly_digest()
        self.summarize_with_fallback()
        self.unattributed()
        self.self_hosted()
        self.runaway_loop()
        # after every other story, on their own random stream (``more``): the stories above keep their numbers
        self.ticket_triage()
        self.live_answers()
        self.release_notes()
        self.sales_assistant()
        self.nightly_summaries()


def run_workload(path: str, seed: int = 7) -> dict[str, Any]:
    """Run the workload into the ledger at ``path``; returns call and drop counts, and what the
    runaway loop's circuit breaker stopped (``breaker``)."""
    exporter = LedgerSpanExporter(path)
    _write_savings_config(path)
    offsets: dict[int, int] = {}
    tracer_provider = TracerProvider(resource=Resource.create({SERVICE_NAME: SERVICE}), id_generator=SeededIds(seed),
                                     shutdown_on_exit=False)
    meter_provider = MeterProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(AttributionSpanProcessor())
    tracer_provider.add_span_processor(
        CostSpanProcessor(BatchSpanProcessor(Backdated(exporter, offsets), schedule_delay_millis=200),
                          meter_provider=meter_provider)
    )
    instrumentor = OpenAIInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True)
    previous = telemetry.use_providers(tracer_provider, meter_provider)
    server = fake_provider()
    try:
        client = openai.OpenAI(base_url=base_url(server), api_key="demo-key", max_retries=0)
        workload = Workload(client, tracer_provider.get_tracer("tokentrail.demo"), seed, offsets)
        workload.run()
        client.close()
    finally:
        server.stop()
        instrumentor.uninstrument()
        telemetry.use_providers(*previous)
        tracer_provider.shutdown()  # flushes the batch processor into the ledger
        meter_provider.shutdown()
    return {"calls": workload.calls, "blocked": 1 if workload.breaker else 0, "written": exporter.written,
            "dropped": exporter.dropped, "breaker": workload.breaker, "days": DAYS}


def _write_savings_config(ledger_path: str) -> None:
    """The savings config beside the ledger (what ``tokentrail savings`` reads when none is named); a
    file the demo did not write is left alone."""
    path = os.path.splitext(ledger_path)[0] + SAVINGS_SUFFIX
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if not f.read().startswith(SAVINGS_CONFIG.splitlines()[0]):
                return
    with open(path, "w", encoding="utf-8") as f:
        f.write(SAVINGS_CONFIG)
