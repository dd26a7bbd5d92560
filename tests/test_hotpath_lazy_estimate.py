"""The prompt is measured for the pre-flight estimate only when a pre-flight check applies.

With no budget configured and no task open nothing can stop a call, so the wrappers hand
``start_llm_call`` the estimate as a function it never calls. The probe: a message whose
text counts how often its length is taken (``prompt_chars`` measures text with ``len``).
"""

from __future__ import annotations

import pytest

import tokentrail
from helpers import only_llm_span
from tokentrail.semconv import attributes as attr


def _probe() -> tuple[str, list[int]]:
    taken = [0]

    class Measured(str):
        def __len__(self) -> int:
            taken[0] += 1
            return str.__len__(self)

    return Measured("Summarise the quarterly report for me, in three bullet points."), taken


@pytest.mark.parametrize("in_task", [False, True], ids=["nothing armed", "in a task"])
def test_openai_measures_the_prompt_only_for_a_pre_flight_check(pipeline, client, in_task):
    text, taken = _probe()
    scope = tokentrail.task("probe") if in_task else tokentrail.attribute(tenant="acme")
    with scope:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
    assert only_llm_span(pipeline).attributes[attr.TOKENTRAIL_TENANT if not in_task else attr.TOKENTRAIL_TASK_NAME]
    assert (taken[0] > 0) is in_task


@pytest.mark.parametrize("in_task", [False, True], ids=["nothing armed", "in a task"])
def test_anthropic_measures_the_prompt_only_for_a_pre_flight_check(pipeline, anthropic_client, in_task):
    text, taken = _probe()
    scope = tokentrail.task("probe") if in_task else tokentrail.attribute(tenant="acme")
    with scope:
        anthropic_client.messages.create(model="claude-sonnet-4-20250514", max_tokens=100,
                                         messages=[{"role": "user", "content": text}])
    assert only_llm_span(pipeline).attributes[attr.TOKENTRAIL_TENANT if not in_task else attr.TOKENTRAIL_TASK_NAME]
    assert (taken[0] > 0) is in_task
