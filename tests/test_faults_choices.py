"""The worst case of a call counts every billed choice (OpenAI ``n``): part of the fault suite."""

from __future__ import annotations

from decimal import Decimal

import pytest

import tokentrail
from tokentrail.testing import openai_api


def _ask(client, **kwargs):
    return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                          **kwargs)


def test_the_worst_case_counts_every_choice_of_n(pipeline, openai_client, server):
    # gpt-4o-mini at $0.15 / $0.60 per M; each call really returns 4 x 50 = 200 output tokens:
    # 20 in / 200 out = $0.000123. Ignoring n, the worst case of a call is 50 output tokens and the
    # third call is let through at $0.000246 spent: $0.000369 for a $0.000300 budget.
    server.enqueue(*(openai_api.reply(prompt_tokens=20, completion_tokens=200) for _ in range(3)))
    with pytest.raises(tokentrail.BudgetExceeded):
        with tokentrail.task("four-answers", budget_usd=0.0003) as t:
            for _ in range(3):
                _ask(openai_client, max_tokens=50, n=4)
    assert t.calls == 2
    assert Decimal(t.spent_nano) / 10**9 == Decimal("0.000246")
    assert len([r for r in server.requests if r.path.endswith("/chat/completions")]) == 2
