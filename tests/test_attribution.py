"""tokentrail.attribute: context manager and decorator, nesting, validation, baggage mirror."""

import asyncio
import threading
from urllib.parse import quote

import pytest
from opentelemetry import baggage

import tokentrail
from tokentrail import state
from tokentrail.semconv import attributes as attr
from tokentrail.testing.pipeline import InMemoryPipeline


def owner():
    return tokentrail.owner_span_attributes()


def test_context_manager_nesting_inner_wins_per_field():
    assert attr.TOKENTRAIL_TENANT not in owner()
    with tokentrail.attribute(tenant="acme", feature="summarize", team="support"):
        with tokentrail.attribute(feature="search", user="u-42"):
            assert owner() == {
                attr.TOKENTRAIL_TENANT: "acme",
                attr.TOKENTRAIL_FEATURE: "search",
                attr.TOKENTRAIL_TEAM: "support",
                attr.USER_ID: "u-42",
            }
        assert owner()[attr.TOKENTRAIL_FEATURE] == "summarize"
        assert attr.USER_ID not in owner()
    assert attr.TOKENTRAIL_TENANT not in owner()


def test_decorator_sync_and_async_and_concurrent_calls():
    @tokentrail.attribute(tenant="acme")
    def sync_fn():
        return owner()[attr.TOKENTRAIL_TENANT]

    @tokentrail.attribute(tenant="globex", feature="chat")
    async def async_fn(delay):
        await asyncio.sleep(delay)
        return owner()[attr.TOKENTRAIL_TENANT], owner()[attr.TOKENTRAIL_FEATURE]

    assert sync_fn() == "acme"
    assert sync_fn.__name__ == "sync_fn"

    async def main():
        with tokentrail.attribute(tenant="outer", feature="f"):
            results = await asyncio.gather(async_fn(0.01), async_fn(0))
            return results, owner()[attr.TOKENTRAIL_TENANT]

    results, after = asyncio.run(main())
    assert results == [("globex", "chat"), ("globex", "chat")]
    assert after == "outer"


def test_async_with():
    async def main():
        async with tokentrail.attribute(tenant="acme"):
            return owner()[attr.TOKENTRAIL_TENANT]

    assert asyncio.run(main()) == "acme"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"tenant": "acme corp"}, "tenant='acme corp' contains ' '"),
        ({"tenant": "x" * 129}, "129 characters long (at most 128)"),
        ({"feature": ""}, "must not be empty"),
        ({"user": 42}, "must be a string"),
        ({"team": "a,b=c"}, "contains"),
        ({"tenant": "acme\n"}, "contains"),
    ],
)
def test_bad_values_raise_at_the_call_site(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        tokentrail.attribute(**kwargs)
    assert "tokentrail.attribute" in str(info.value)
    assert fragment in str(info.value)


def test_allowed_characters_and_max_length_pass():
    value = "acme-EU_1.x:team@corp/+" + "a" * (128 - 23)
    assert len(value) == 128
    with tokentrail.attribute(tenant=value):
        assert owner()[attr.TOKENTRAIL_TENANT] == value


@pytest.mark.parametrize("value, valid", [
    ("support", True),
    ("support ops", False),
    ("eu-west/1:a@b+c.d_e", True),
    ("a" * 128, True),
    ("a" * 129, False),
    ("tier=gold", False),
    ("café", False),
    ("a;b", False),
])
def test_one_rule_for_a_value_wherever_it_comes_from(value, valid, monkeypatch):
    """TOKENTRAIL_ATTRIBUTES, attribute(), task() and trusted inbound baggage accept the same values."""
    state.reset()
    monkeypatch.setenv("TOKENTRAIL_ATTRIBUTES", f"team={value}")
    from_env = tokentrail.current_owner().get("team") == value
    monkeypatch.delenv("TOKENTRAIL_ATTRIBUTES")

    def accepted(make):
        try:
            make()
            return True
        except ValueError:
            return False

    from_attribute = accepted(lambda: tokentrail.attribute(team=value))
    from_task = accepted(lambda: tokentrail.task(value))
    monkeypatch.setenv("TOKENTRAIL_TRUST_INBOUND_BAGGAGE", "true")
    with tokentrail.consuming({"baggage": f"{attr.TOKENTRAIL_TEAM}={quote(value, safe='')}"}):
        from_baggage = tokentrail.current_owner().get("team") == value
    assert (from_env, from_attribute, from_task, from_baggage) == (valid, valid, valid, valid)


def test_a_bad_default_is_ignored_not_the_whole_setting(monkeypatch, caplog):
    monkeypatch.setenv("TOKENTRAIL_ATTRIBUTES", "team=support ops,feature=chat")
    state.reset()
    assert tokentrail.current_owner() == {"feature": "chat"}
    assert "ignoring 'team=support ops' (the value contains ' '" in caplog.text


def test_extract_into_a_given_context_and_inject_from_one():
    base = baggage.set_baggage("app.request", "r-1")
    ctx = tokentrail.extract({"baggage": "tokentrail.feature=chat"}, context=base)
    assert baggage.get_baggage("app.request", ctx) == "r-1"
    assert baggage.get_baggage(attr.TOKENTRAIL_FEATURE, ctx) == "chat"
    assert baggage.get_baggage("app.request") is None  # the current context is untouched
    outbound = tokentrail.inject({}, context=ctx)["baggage"]
    assert "tokentrail.feature=chat" in outbound and "app.request=r-1" in outbound


def test_mirrored_into_w3c_baggage():
    with tokentrail.attribute(tenant="acme", user="u-42"):
        assert baggage.get_baggage(attr.TOKENTRAIL_TENANT) == "acme"
        assert baggage.get_baggage(attr.USER_ID) == "u-42"
        headers = tokentrail.inject({})
    assert "tokentrail.tenant=acme" in headers["baggage"]
    assert baggage.get_baggage(attr.TOKENTRAIL_TENANT) is None


def test_static_defaults_from_env_are_overridden_by_context(monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_ATTRIBUTES", "team=support,feature=chat")
    assert owner()[attr.TOKENTRAIL_TEAM] == "support"
    with tokentrail.attribute(feature="triage"):
        assert owner()[attr.TOKENTRAIL_FEATURE] == "triage"
        assert owner()[attr.TOKENTRAIL_TEAM] == "support"


def test_every_span_is_stamped_with_the_owner():
    with InMemoryPipeline(instrument=False) as pipeline:
        tracer = pipeline.tracer()
        with tokentrail.attribute(tenant="acme", feature="summarize", user="u-42"):
            with tracer.start_as_current_span("tool.lookup"):
                pass
        [span] = pipeline.spans()
    assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
    assert span.attributes[attr.TOKENTRAIL_FEATURE] == "summarize"
    assert span.attributes[attr.USER_ID] == "u-42"


def test_plain_thread_needs_wrap():
    seen = {}
    with tokentrail.attribute(tenant="acme"):
        bare = threading.Thread(target=lambda: seen.__setitem__("bare", owner().get(attr.TOKENTRAIL_TENANT)))
        wrapped = threading.Thread(
            target=tokentrail.wrap(lambda: seen.__setitem__("wrapped", owner()[attr.TOKENTRAIL_TENANT])))
        bare.start(), wrapped.start()
        bare.join(), wrapped.join()
    assert seen == {"bare": None, "wrapped": "acme"}


def test_one_shared_attribute_object_entered_by_many_tasks_and_threads():
    ACME = tokentrail.attribute(tenant="acme")

    async def worker(delay):
        async with ACME:
            await asyncio.sleep(delay)
            inside = owner()[attr.TOKENTRAIL_TENANT]
        return inside, owner().get(attr.TOKENTRAIL_TENANT)

    async def main():
        return await asyncio.gather(*(worker(d) for d in (0.02, 0, 0.01)))

    assert asyncio.run(main()) == [("acme", None)] * 3
    seen = []

    def in_thread():
        with ACME:
            seen.append(owner()[attr.TOKENTRAIL_TENANT])
        seen.append(owner().get(attr.TOKENTRAIL_TENANT))

    threads = [threading.Thread(target=in_thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (seen.count("acme"), seen.count(None)) == (4, 4)
