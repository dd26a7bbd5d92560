"""Another process for the hop tests: it receives the trace context the way a real worker would
(environment, HTTP headers, Redis stream message), makes an LLM call to the fake provider with
the real openai SDK, and appends its finished spans as JSON lines to a file.

    python hop_worker.py env   OUT            # TRACEPARENT / BAGGAGE from the environment
    python hop_worker.py http  OUT N          # serve N POSTs on a free port (printed on stdout)
    python hop_worker.py redis OUT URL STREAM N   # consume N messages from a Redis stream
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import openai
from opentelemetry.trace import SpanKind

import tokentrail
from tokentrail.instrumentation.openai import OpenAIInstrumentor
from tokentrail.testing import InMemoryPipeline


def dump(pipeline: InMemoryPipeline, out: str) -> None:
    if os.environ.get("HOP_LEDGER"):  # also into the machine's ledger, beside the parent's spans
        from tokentrail.ledger import LedgerSpanExporter

        exporter = LedgerSpanExporter(os.environ["HOP_LEDGER"])
        exporter.export(pipeline.spans())
        exporter.shutdown()
    with open(out, "a", encoding="utf-8") as fh:
        for s in pipeline.spans():
            fh.write(json.dumps({
                "name": s.name,
                "trace_id": format(s.context.trace_id, "032x"),
                "span_id": format(s.context.span_id, "016x"),
                "parent_id": format(s.parent.span_id, "016x") if s.parent else None,
                "attributes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.attributes.items()},
            }) + "\n")


def main(argv: list[str]) -> None:
    mode, out = argv[1], argv[2]
    with InMemoryPipeline(instrument=[OpenAIInstrumentor()]) as pipeline:
        tracer = pipeline.tracer("hop_worker")
        client = openai.OpenAI(base_url=os.environ["HOP_BASE_URL"], api_key="sk-test", max_retries=0)

        def work(span_name: str, kind: SpanKind) -> None:
            with tracer.start_as_current_span(span_name, kind=kind):
                client.chat.completions.create(model="gpt-4o-mini",
                                               messages=[{"role": "user", "content": "Sub-step of the task."}])

        try:
            if mode == "env":
                tokentrail.attach_from_environ()
                work("child.work", SpanKind.INTERNAL)
            elif mode == "http":
                remaining = [int(argv[3])]

                class Handler(BaseHTTPRequestHandler):
                    def do_POST(self) -> None:
                        self.rfile.read(int(self.headers.get("content-length") or 0))
                        with tokentrail.consuming(dict(self.headers.items())):
                            work("worker.handle", SpanKind.SERVER)
                        body = b'{"ok": true}'
                        self.send_response(200)
                        self.send_header("content-type", "application/json")
                        self.send_header("content-length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        remaining[0] -= 1

                    def log_message(self, *args) -> None:
                        pass

                server = HTTPServer(("127.0.0.1", 0), Handler)
                print(server.server_address[1], flush=True)
                while remaining[0] > 0:
                    server.handle_request()
                server.server_close()
            elif mode == "redis":
                import redis

                url, stream, count = argv[3], argv[4], int(argv[5])
                r = redis.Redis.from_url(url)
                for _id, fields in r.xrange(stream, count=count):
                    with tokentrail.consuming(fields):
                        work("queue.process", SpanKind.CONSUMER)
            else:
                raise SystemExit(f"unknown mode {mode}")
        finally:
            dump(pipeline, out)


if __name__ == "__main__":
    main(sys.argv)
