"""The per-call path's cheap readers give exactly what the plain ones gave.

``config.env`` stands in for ``os.environ.get`` (it must see every change made through
``os.environ``, as the tests' ``monkeypatch`` makes them), and ``trust.baggage_with_identity``
builds the baggage in one pass where it used to remove and set entry by entry: the resulting
baggage (entries, order, signature) is compared with that entry-by-entry reference.
"""

from __future__ import annotations

import os

import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from tokentrail import config, trust
from tokentrail.identity import IDENTITY_KEYS

NAME = "TOKENTRAIL_HOTPATH_TEST_VARIABLE"


def test_env_follows_every_change_made_through_os_environ(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    assert config.env(NAME) is None
    assert config.env(NAME, "fallback") == "fallback"
    monkeypatch.setenv(NAME, "first")
    assert config.env(NAME) == "first"
    monkeypatch.setenv(NAME, "second")
    assert config.env(NAME) == "second"
    os.environ[NAME] = ""
    assert config.env(NAME, "fallback") == ""  # set but empty is not unset, as with os.environ.get
    monkeypatch.delenv(NAME)
    assert config.env(NAME) is None


@pytest.mark.parametrize("value", ["plain", "é-ü-€", "with spaces, commas=and;semicolons", "x" * 5000])
def test_env_decodes_as_os_environ_does(monkeypatch, value):
    monkeypatch.setenv(NAME, value)
    assert config.env(NAME) == os.environ.get(NAME) == value


def test_env_reads_a_replaced_os_environ(monkeypatch):
    monkeypatch.setattr(os, "environ", {NAME: "from a plain dict"})
    assert config.env(NAME) == "from a plain dict"
    assert config.env("TOKENTRAIL_HOTPATH_NOT_THERE", "d") == "d"


def _reference(ctx: Context, identity) -> Context:
    """What baggage_with_identity did before: our entries removed, then the new ones set, one by one."""
    for key in (*IDENTITY_KEYS, trust.SIGNATURE_KEY):
        if baggage.get_baggage(key, ctx) is not None:
            ctx = baggage.remove_baggage(key, ctx)
    for key, value in identity.items():
        ctx = baggage.set_baggage(key, value, ctx)
    secret = trust._secret()
    if secret and identity:
        ctx = baggage.set_baggage(trust.SIGNATURE_KEY, trust.sign(identity, secret), ctx)
    return ctx


def _with(entries) -> Context:
    ctx = Context()
    for key, value in entries:
        ctx = baggage.set_baggage(key, value, ctx)
    return ctx


STARTS = {
    "empty": Context(),
    "foreign only": _with([("session", "s-1"), ("region", "eu")]),
    "ours between foreign": _with([("a", "1"), ("tokentrail.tenant", "old"), ("b", "2"),
                                   ("tokentrail.sig", "stale"), ("tokentrail.task.name", "t"), ("c", "3")]),
    "ours only": _with([("tokentrail.feature", "f"), ("user.id", "u-1")]),
    "one of ours holding None": _with([("x", "1"), ("tokentrail.team", None), ("y", "2")]),
    "not a dict under the key": otel_context.set_value(trust.BAGGAGE_KEY, "not-a-dict", Context()),
    "other context values": otel_context.set_value("unrelated", 7, _with([("tokentrail.tenant", "old")])),
}
IDENTITIES = {
    "none": {},
    "tenant and feature": {"tokentrail.tenant": "acme", "tokentrail.feature": "summarize"},
    "a task": {"tokentrail.tenant": "acme", "tokentrail.task.name": "agent", "tokentrail.task.id": "t-1"},
    "the None one set": {"tokentrail.team": "support"},
}


@pytest.mark.parametrize("secret", [None, "s3cret"])
@pytest.mark.parametrize("identity", IDENTITIES, ids=str)
@pytest.mark.parametrize("start", STARTS, ids=str)
def test_baggage_with_identity_is_the_entry_by_entry_result(monkeypatch, start, identity, secret):
    if secret:
        monkeypatch.setenv(trust.ENV_SECRET, secret)
    else:
        monkeypatch.delenv(trust.ENV_SECRET, raising=False)
    ctx = STARTS[start]
    got = trust.baggage_with_identity(ctx, IDENTITIES[identity])
    want = _reference(ctx, IDENTITIES[identity])
    assert list(baggage.get_all(got).items()) == list(baggage.get_all(want).items())
    assert dict(got).keys() == dict(want).keys()
    assert {k: v for k, v in got.items() if k != trust.BAGGAGE_KEY} == {
        k: v for k, v in want.items() if k != trust.BAGGAGE_KEY}
    assert otel_context.get_value(trust.BAGGAGE_KEY, got) == otel_context.get_value(trust.BAGGAGE_KEY, want)
