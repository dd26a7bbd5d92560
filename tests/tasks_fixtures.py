"""Fixtures for the task, hop and budget tests: the real openai SDK against the fake provider
on 127.0.0.1, the in-memory tokentrail pipeline, and task spans/metrics routed to it."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from tokentrail import state
from tokentrail.instrumentation.openai import OpenAIInstrumentor
from tokentrail.semconv import attributes as attr
from tokentrail.testing import InMemoryPipeline, fake_provider, openai_api


@pytest.fixture(scope="module")
def server():
    with fake_provider() as running:
        yield running


@pytest.fixture
def pipeline(server, monkeypatch):
    server.reset()
    monkeypatch.delenv("TOKENTRAIL_BUDGETS", raising=False)
    monkeypatch.delenv("TOKENTRAIL_BAGGAGE_SECRET", raising=False)
    monkeypatch.delenv("TOKENTRAIL_TRUST_INBOUND_BAGGAGE", raising=False)
    state.reset()
    with InMemoryPipeline(instrument=[OpenAIInstrumentor()]) as running:  # routes task spans/metrics too
        yield running


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=0) as c:
        yield c


@pytest.fixture
def aclient(server):
    return openai.AsyncOpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=0)


def usd(span) -> Decimal:
    return Decimal(span.attributes[attr.TOKENTRAIL_COST_NANO_USD]) / Decimal(10**9)


def task_span(pipeline, name):
    [span] = [s for s in pipeline.spans() if s.attributes.get(attr.TOKENTRAIL_TASK_NAME) == name
              and attr.TOKENTRAIL_TASK_OUTCOME in s.attributes]
    return span


def ask(text: str = "Summarise the quarterly report for me."):
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def redis_url():
    """A real redis-server on a free 127.0.0.1 port, for the life of the test module."""
    import shutil
    import socket
    import subprocess
    import time

    redis = pytest.importorskip("redis")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
