"""Trust at the boundary: inbound baggage attribution cannot move cost to another tenant or
explode cardinality. Inbound headers arrive as a real server would see them (extracted with the
standard propagators), then a span is made in that context."""

from __future__ import annotations

import pytest
from opentelemetry import propagate

import tokentrail
from tokentrail import propagation, state, trust
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as names
from tokentrail.testing import openai_api

SECRET = "s3cret-of-the-fleet"
TRACEPARENT = "00-{:032x}-00f067aa0ba902b7-01"


def signed_headers(monkeypatch, **owner):
    """Headers as a tokentrail process of the fleet sends them."""
    monkeypatch.setenv("TOKENTRAIL_BAGGAGE_SECRET", SECRET)
    with tokentrail.attribute(**owner):
        return tokentrail.inject({})


def handle(pipeline, headers, name="inbound"):
    """What a server does with a request: extract with the standard propagators, span inside."""
    ctx = propagate.extract(headers)
    with propagation.attached(ctx):
        with pipeline.tracer().start_as_current_span(name):
            owner = tokentrail.owner_span_attributes()
    span = next(s for s in reversed(pipeline.spans()) if s.name == name)
    return owner, span


def rejected(pipeline, reason):
    return pipeline.metric_sum(names.TOKENTRAIL_ATTRIBUTION_REJECTED,
                               attributes={attr.TOKENTRAIL_ATTRIBUTION_REJECTION: reason})


def test_signed_baggage_from_the_fleet_is_accepted(pipeline, monkeypatch):
    headers = signed_headers(monkeypatch, tenant="acme", user="u-42")
    assert trust.SIGNATURE_KEY in headers["baggage"]
    owner, span = handle(pipeline, {**headers, "traceparent": TRACEPARENT.format(1)})
    assert owner[attr.TOKENTRAIL_TENANT] == "acme" and owner[attr.USER_ID] == "u-42"
    assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
    assert attr.TOKENTRAIL_ATTRIBUTION_REJECTION not in span.attributes


def test_forged_header_is_ignored_counted_and_marked(pipeline, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_BAGGAGE_SECRET", SECRET)
    forged = {"traceparent": TRACEPARENT.format(2),
              "baggage": "tokentrail.tenant=victim-corp,tokentrail.sig=AAAAAAAAAAAAAAAAAAAAAA"}
    owner, span = handle(pipeline, forged)
    assert attr.TOKENTRAIL_TENANT not in owner
    assert attr.TOKENTRAIL_TENANT not in span.attributes
    assert span.attributes[attr.TOKENTRAIL_ATTRIBUTION_REJECTION] == "bad_signature"
    assert rejected(pipeline, "bad_signature") == 1


def test_unsigned_header_is_ignored_when_a_secret_is_set(pipeline, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_BAGGAGE_SECRET", SECRET)
    owner, span = handle(pipeline, {"traceparent": TRACEPARENT.format(3), "baggage": "tokentrail.tenant=victim-corp"})
    assert attr.TOKENTRAIL_TENANT not in owner
    assert span.attributes[attr.TOKENTRAIL_ATTRIBUTION_REJECTION] == "unsigned"
    assert rejected(pipeline, "unsigned") == 1


def test_tampered_value_fails_verification(pipeline, monkeypatch):
    headers = signed_headers(monkeypatch, tenant="acme", feature="chat")
    tampered = {**headers, "traceparent": TRACEPARENT.format(4),
                "baggage": headers["baggage"].replace("tokentrail.tenant=acme", "tokentrail.tenant=globex")}
    assert tampered["baggage"] != headers["baggage"]
    owner, span = handle(pipeline, tampered)
    assert attr.TOKENTRAIL_TENANT not in owner and attr.TOKENTRAIL_FEATURE not in owner
    assert span.attributes[attr.TOKENTRAIL_ATTRIBUTION_REJECTION] == "bad_signature"


def test_signature_from_another_fleet_fails(pipeline, monkeypatch):
    headers = signed_headers(monkeypatch, tenant="acme")
    monkeypatch.setenv("TOKENTRAIL_BAGGAGE_SECRET", "a-different-secret")
    owner, span = handle(pipeline, {**headers, "traceparent": TRACEPARENT.format(5)})
    assert attr.TOKENTRAIL_TENANT not in owner


def test_without_secret_inbound_is_ignored_unless_trusted(pipeline, monkeypatch):
    headers = {"traceparent": TRACEPARENT.format(6), "baggage": "tokentrail.tenant=acme,tokentrail.team=support"}
    owner, span = handle(pipeline, headers)
    assert attr.TOKENTRAIL_TENANT not in owner
    assert span.attributes[attr.TOKENTRAIL_ATTRIBUTION_REJECTION] == "unsigned"
    monkeypatch.setenv("TOKENTRAIL_TRUST_INBOUND_BAGGAGE", "true")
    owner, span = handle(pipeline, headers, name="trusted")
    assert owner[attr.TOKENTRAIL_TENANT] == "acme" and owner[attr.TOKENTRAIL_TEAM] == "support"
    assert attr.TOKENTRAIL_ATTRIBUTION_REJECTION not in span.attributes


def test_oversized_and_malformed_values_are_rejected(pipeline, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_TRUST_INBOUND_BAGGAGE", "true")
    big = "a" * 3000
    owner, span = handle(pipeline, {"traceparent": TRACEPARENT.format(7),
                                    "baggage": f"tokentrail.tenant={big},tokentrail.team=support"})
    assert attr.TOKENTRAIL_TENANT not in owner
    assert owner[attr.TOKENTRAIL_TEAM] == "support"  # the valid field stays
    assert span.attributes[attr.TOKENTRAIL_ATTRIBUTION_REJECTION] == "invalid_value"
    owner, _ = handle(pipeline, {"traceparent": TRACEPARENT.format(8),
                                 "baggage": "tokentrail.tenant=acme%0Aevil%3D1"}, name="malformed")
    assert attr.TOKENTRAIL_TENANT not in owner
    assert rejected(pipeline, "invalid_value") == 2


def test_a_signed_oversized_value_is_still_rejected(pipeline, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_BAGGAGE_SECRET", SECRET)
    big = "a" * 300
    baggage = f"tokentrail.tenant={big},tokentrail.sig={trust.sign({attr.TOKENTRAIL_TENANT: big}, SECRET.encode())}"
    owner, span = handle(pipeline, {"traceparent": TRACEPARENT.format(9), "baggage": baggage})
    assert attr.TOKENTRAIL_TENANT not in owner
    assert span.attributes[attr.TOKENTRAIL_ATTRIBUTION_REJECTION] == "invalid_value"


def test_flood_of_distinct_tenants_is_capped(pipeline, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_TRUST_INBOUND_BAGGAGE", "true")
    monkeypatch.setenv("TOKENTRAIL_MAX_INBOUND_TENANTS", "50")
    accepted = set()
    for i in range(500):
        owner, _ = handle(pipeline, {"traceparent": TRACEPARENT.format(1000 + i),
                                     "baggage": f"tokentrail.tenant=t-{i}"}, name=f"req-{i}")
        if attr.TOKENTRAIL_TENANT in owner:
            accepted.add(owner[attr.TOKENTRAIL_TENANT])
    assert len(accepted) == 50
    assert rejected(pipeline, "cardinality") == 450
    # a tenant admitted before the cap keeps being accepted
    owner, _ = handle(pipeline, {"traceparent": TRACEPARENT.format(9999), "baggage": "tokentrail.tenant=t-3"}, name="again")
    assert owner[attr.TOKENTRAIL_TENANT] == "t-3"
    state.reset()  # a fresh start of the process: the admitted tenants are forgotten
    owner, _ = handle(pipeline, {"traceparent": TRACEPARENT.format(9998), "baggage": "tokentrail.tenant=t-499"},
                      name="after-reset")
    assert owner[attr.TOKENTRAIL_TENANT] == "t-499"


def test_flood_with_a_secret_never_reaches_a_metric(pipeline, client, server, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_BAGGAGE_SECRET", SECRET)
    server.enqueue(*[openai_api.reply()] * 20)
    for i in range(20):
        with propagation.attached(propagate.extract({"traceparent": TRACEPARENT.format(5000 + i),
                                                     "baggage": f"tokentrail.tenant=flood-{i}"})):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    tenants = {p.attributes.get(attr.TOKENTRAIL_TENANT) for p in pipeline.metric_points(names.TOKENTRAIL_TOKENS)}
    assert tenants == {None}
    assert rejected(pipeline, "unsigned") == 20


def test_local_attribution_replaces_untrusted_inbound_before_forwarding(pipeline, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_BAGGAGE_SECRET", SECRET)
    with propagation.attached(propagate.extract({"baggage": "tokentrail.tenant=victim-corp,user.id=u-1"})):
        with tokentrail.attribute(feature="chat"):
            outbound = tokentrail.inject({})
    assert "victim-corp" not in outbound["baggage"] and "u-1" not in outbound["baggage"]
    assert "tokentrail.feature=chat" in outbound["baggage"]
