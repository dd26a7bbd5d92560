"""Shared fixtures: one fake provider server for the session, an ``InMemoryPipeline`` with tokentrail's
process state reset around each test, each provider's real SDK client pointed at the fake server, and a
real redis-server. Plain helpers (``usd``, ``only_llm_span``...) are in ``helpers.py``.

A test module's own fixture of the same name (``server``, ``pipeline``) overrides these, each with a
comment saying why; the fixtures below that need the server then use the module's.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import anthropic
import boto3
import openai
import pytest
import redis
from botocore.config import Config
from google import genai
from helpers import free_port
from mistralai.client import Mistral

from tokentrail import state
from tokentrail.testing import InMemoryPipeline, fake_provider, openai_api

API_KEY = "test-key"


@pytest.fixture(scope="session")
def server():
    """Every provider fake on one loopback port (``server.url``), for the whole session."""
    with fake_provider() as running:
        yield running


@pytest.fixture
def make_pipeline(server, monkeypatch):
    """``make_pipeline(**InMemoryPipeline arguments)``: an entered pipeline, closed after the test.

    The server's script and request log are emptied and ``tokentrail.state`` is reset before and after
    the test, so nothing one test remembered (budgets spent, spans seen, inbound tenants) reaches the next;
    budgets and inbound trust from the developer's shell do not reach it either.
    """
    for name in ("TOKENTRAIL_BUDGETS", "TOKENTRAIL_BAGGAGE_SECRET", "TOKENTRAIL_TRUST_INBOUND_BAGGAGE"):
        monkeypatch.delenv(name, raising=False)
    server.reset()
    state.reset()
    opened: list[InMemoryPipeline] = []

    def make(**kwargs) -> InMemoryPipeline:
        pipeline = InMemoryPipeline(**kwargs).__enter__()
        opened.append(pipeline)
        return pipeline

    yield make
    for pipeline in reversed(opened):
        pipeline.close()
    state.reset()
    server.reset()


@pytest.fixture
def pipeline(make_pipeline) -> InMemoryPipeline:
    """The pipeline with every installed tokentrail instrumentor."""
    return make_pipeline()


@pytest.fixture
def openai_client(server):
    with openai.OpenAI(base_url=openai_api.base_url(server), api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def client(openai_client):
    """The OpenAI client under the short name most modules use."""
    return openai_client


@pytest.fixture
def aclient(server):
    """``openai.AsyncOpenAI``; left open: its connections belong to the test's event loop."""
    return openai.AsyncOpenAI(base_url=openai_api.base_url(server), api_key=API_KEY, max_retries=0)


@pytest.fixture
def anthropic_client(server):
    with anthropic.Anthropic(base_url=server.url, api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def genai_client(server):
    """google-genai against the Gemini Developer API fake."""
    client = genai.Client(api_key=API_KEY, http_options={"base_url": server.url})
    yield client
    client.close()


@pytest.fixture
def mistral_client(server):
    with Mistral(api_key=API_KEY, server_url=server.url) as client:
        yield client


@pytest.fixture
def boto3_bedrock_client(server):
    """boto3 ``bedrock-runtime``, one attempt per call (the fake scripts the retries a test wants)."""
    client = boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id="AKIDTEST", aws_secret_access_key="secret",
                          config=Config(retries={"total_max_attempts": 1}))
    yield client
    client.close()


@pytest.fixture(scope="module")
def redis_url():
    """A real redis-server on a free 127.0.0.1 port, for the life of the test module."""
    binary = shutil.which("redis-server")
    if binary is None:  # a system binary, not a Python dependency: .ci/run installs it
        pytest.skip("redis-server is not installed")
    port = free_port()
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
