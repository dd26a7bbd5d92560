"""The shared fixtures of ``conftest.py``: each SDK's client reaches the session's fake provider, and its
call comes out of the ``pipeline`` priced and owned; nothing remembered leaks between tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import tokentrail
from tokentrail import state
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics

ASK = "What is the capital of France?"
CALLS = {
    "openai": lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": ASK}]),
    "anthropic": lambda c: c.messages.create(model="claude-sonnet-4-20250514", max_tokens=256,
                                             messages=[{"role": "user", "content": ASK}]),
    "genai": lambda c: c.models.generate_content(model="gemini-2.5-flash", contents=ASK),
    "mistral": lambda c: c.chat.complete(model="mistral-small-latest", messages=[{"role": "user", "content": ASK}]),
    "boto3_bedrock": lambda c: c.converse(modelId="us.anthropic.claude-sonnet-4-20250514-v1:0",
                                          messages=[{"role": "user", "content": [{"text": ASK}]}]),
}


@pytest.mark.parametrize("sdk", sorted(CALLS))
def test_each_sdk_client_is_priced_and_owned_in_the_pipeline(sdk, request, pipeline, server):
    client = request.getfixturevalue(f"{sdk}_client")
    with tokentrail.attribute(tenant="acme", feature="fixtures"):
        CALLS[sdk](client)
    [span] = pipeline.llm_spans()
    assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
    assert span.attributes[attr.TOKENTRAIL_COST_NANO_USD] > 0
    assert pipeline.metric_count(metrics.TOKENTRAIL_COST, tenant="acme") == 1
    assert len(server.requests) == 1  # the session server, emptied for this test


_leftover = state.BoundedSet(4)


def test_make_pipeline_takes_arguments_and_state_starts_empty(make_pipeline):
    _leftover.add("from this test")
    pipeline = make_pipeline(instrument=False, resource_attributes={attr.DEPLOYMENT_ENVIRONMENT_NAME: "ci"})
    assert pipeline.resource.attributes[attr.DEPLOYMENT_ENVIRONMENT_NAME] == "ci"
    assert len(_leftover) == 0  # the pipeline reset the process state


def test_the_next_test_sees_nothing_of_the_previous_one(make_pipeline):
    assert len(_leftover) == 0


def test_no_test_module_skips_on_a_missing_import():
    """Our own code and the test extra's dependencies are imported plainly: a broken import fails."""
    banned = "pytest." + "importorskip("
    offenders = [path.name for path in Path(__file__).parent.glob("*.py") if banned in path.read_text()]
    assert offenders == []
