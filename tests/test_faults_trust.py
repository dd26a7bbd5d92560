"""Unsigned trust mode under a flood (part of the fault suite): every owner dimension is capped, the
operator's known tenants always pass, and an oversized baggage header is counted, not logged whole."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import propagate

import tokentrail
from tokentrail import propagation
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as names

TRACEPARENT = "00-{:032x}-00f067aa0ba902b7-01"


@pytest.fixture
def trusting(pipeline, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_TRUST_INBOUND_BAGGAGE", "true")
    monkeypatch.setenv("TOKENTRAIL_MAX_INBOUND_TENANTS", "10")
    monkeypatch.setenv("TOKENTRAIL_MAX_INBOUND_VALUES", "10")
    return pipeline


def handle(pipeline, baggage: str, n: int) -> dict:
    """A server's request: extracted with the standard propagators, a span started inside."""
    ctx = propagate.extract({"traceparent": TRACEPARENT.format(n + 1), "baggage": baggage})
    with propagation.attached(ctx):
        with pipeline.tracer().start_as_current_span(f"req-{n}"):
            return tokentrail.owner_span_attributes()


def rejected(pipeline) -> float:
    return pipeline.metric_sum(names.TOKENTRAIL_ATTRIBUTION_REJECTED,
                               attributes={attr.TOKENTRAIL_ATTRIBUTION_REJECTION: "cardinality"})


@pytest.mark.parametrize("key", [attr.TOKENTRAIL_FEATURE, attr.TOKENTRAIL_TEAM, attr.USER_ID])
def test_a_flood_of_any_owner_dimension_is_capped(trusting, key):
    seen = {handle(trusting, f"tokentrail.tenant=acme,{key}=v-{i}", i).get(key) for i in range(100)}
    assert len(seen - {None}) == 10
    assert rejected(trusting) == 90
    # only the flooded field is dropped: the tenant of every request stays
    assert handle(trusting, f"tokentrail.tenant=acme,{key}=v-99", 500)[attr.TOKENTRAIL_TENANT] == "acme"


def test_known_tenants_are_accepted_after_a_flood(trusting, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_KNOWN_TENANTS", "acme, globex")
    for i in range(50):
        handle(trusting, f"tokentrail.tenant=flood-{i}", i)
    assert rejected(trusting) == 40
    assert handle(trusting, "tokentrail.tenant=globex", 100)[attr.TOKENTRAIL_TENANT] == "globex"
    assert handle(trusting, "tokentrail.tenant=acme", 101)[attr.TOKENTRAIL_TENANT] == "acme"
    assert attr.TOKENTRAIL_TENANT not in handle(trusting, "tokentrail.tenant=newcomer", 102)


def test_an_oversized_baggage_header_is_counted_and_not_logged_whole(trusting, caplog):
    caplog.set_level(logging.WARNING, logger="opentelemetry.baggage.propagation")
    huge = "tokentrail.tenant=acme," + ",".join(f"k{i}=" + "v" * 60 for i in range(1000))  # about 64 KB
    owner = handle(trusting, huge, 1)
    assert attr.TOKENTRAIL_TENANT not in owner  # the propagator drops the whole header
    assert trusting.metric_sum(names.TOKENTRAIL_ATTRIBUTION_REJECTED,
                               attributes={attr.TOKENTRAIL_ATTRIBUTION_REJECTION: "oversized"}) == 1
    [line] = [r.getMessage() for r in caplog.records if r.name == "opentelemetry.baggage.propagation"]
    assert len(line) < 300 and "characters" in line
