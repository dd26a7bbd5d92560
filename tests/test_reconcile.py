"""tokentrail reconcile: a real workload (the openai / anthropic SDKs over HTTP to the fake provider,
tokentrail's pipeline, the ledger exporter) against the provider's bill served by the fake admin APIs;
capture rates and every residual category asserted to the nano-dollar."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from tokentrail.cli import main
from tokentrail.ledger import LedgerSpanExporter
from tokentrail.ledger.schema import SCHEMA_VERSION, connect
from tokentrail.reconcile import store
from tokentrail.semconv import attributes as a
from tokentrail.testing import admin_api, anthropic_api, openai_api
from tokentrail.testing.server import FakeResponse

D1, D2, D3 = date(2026, 11, 3), date(2026, 11, 4), date(2026, 11, 5)
MINI = "gpt-4o-mini-2024-07-18"  # the snapshot the API answers with, as its usage report names it
PRIVATE = "acme-private-model"  # on no rate card: unpriced in the ledger, billed by the provider
SONNET = "claude-sonnet-4-5-20250929"


def _noon_ns(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc).timestamp()) * 10**9


def _ledger(tmp_path, pipeline, calls) -> str:
    """Run ``calls`` (day, call()) through the pipeline into a ledger, each call's span placed on its day."""
    days = {}
    for day, call in calls:
        call()
        days[pipeline.llm_spans()[-1].context.span_id] = day
    path = str(tmp_path / "ledger.db")
    assert LedgerSpanExporter(path).export(pipeline.spans()).name == "SUCCESS"
    conn = sqlite3.connect(path)
    for span_id, day in days.items():
        conn.execute("UPDATE spans SET start_ns = ? WHERE span_id = ?", (_noon_ns(day), format(span_id, "016x")))
    conn.commit()
    conn.close()
    return path


def _chat(client, model, **usage):
    return lambda: client.chat.completions.create(
        model=model.split("-2024")[0], messages=[{"role": "user", "content": "hi"}],
        extra_headers={openai_api.HEADER: json.dumps({"model": model, **usage})})


def _reconcile(capsys, monkeypatch, admin, provider, *args) -> tuple[int, dict | str, str]:
    env = {"openai": ("OPENAI_ADMIN_KEY", admin_api.OPENAI_ADMIN_KEY),
           "anthropic": ("ANTHROPIC_ADMIN_KEY", admin_api.ANTHROPIC_ADMIN_KEY)}[provider]
    monkeypatch.setenv(*env)
    base = admin.url + ("/v1" if provider == "openai" else "")
    code = main(["reconcile", provider, "--base-url", base, *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "json" in args and out else out), err


def _mini_usage(day, input_tokens, cached, output, **keys):
    return {"day": day, "model": MINI, "input_tokens": input_tokens, "input_cached_tokens": cached,
            "output_tokens": output, "num_model_requests": 1, **keys}


def _mini_costs(day, uncached, cached, output, factor="0.9"):
    """The provider's cost lines for gpt-4o-mini tokens at the card's rates times ``factor`` (USD, exact)."""
    f = Decimal(factor)
    return [{"day": day, "line_item": f"{MINI}, input", "usd": str(Decimal("0.15") * f * uncached / 10**6)},
            {"day": day, "line_item": f"{MINI}, cached input", "usd": str(Decimal("0.075") * f * cached / 10**6)},
            {"day": day, "line_item": f"{MINI}, output", "usd": str(Decimal("0.6") * f * output / 10**6)}]


@pytest.fixture
def openai_workload(tmp_path, pipeline, openai_client):
    # gpt-4o-mini, 10,000 in (2,000 cached) / 1,000 out: $0.0012 + $0.00015 + $0.0006 = $0.00195 a call
    mini = _chat(openai_client, MINI, prompt_tokens=10_000, cached_tokens=2_000, completion_tokens=1_000)
    private = _chat(openai_client, PRIVATE, prompt_tokens=1_000, completion_tokens=100)
    return _ledger(tmp_path, pipeline, [(D1, mini), (D1, mini), (D1, private), (D2, mini)])


def test_openai_bill_explained_per_day_and_model_to_the_nano(openai_workload, capsys, monkeypatch):
    book = admin_api.AdminBook(
        openai_usage=[
            # D1: the ledger's two calls plus 10,000 in (2,000 cached) / 1,000 out it never saw
            _mini_usage(D1, 30_000, 6_000, 3_000, project_id="proj_a"),
            {"day": D1, "model": PRIVATE, "input_tokens": 1_000, "output_tokens": 100, "num_model_requests": 1},
            _mini_usage(D2, 10_000, 2_000, 1_000),  # D2: exactly the ledger's tokens
            _mini_usage(D3, 5_000, 0, 500),  # D3: a day the ledger has no call of
        ],
        openai_costs=[
            *_mini_costs(D1, 24_000, 6_000, 3_000), *_mini_costs(D2, 8_000, 2_000, 1_000),
            *_mini_costs(D3, 5_000, 0, 500),
            {"day": D1, "line_item": f"{PRIVATE}, input", "usd": "0.001"},
            {"day": D1, "line_item": f"{PRIVATE}, output", "usd": "0.0002"},
            {"day": D1, "line_item": "web search tool calls", "usd": "0.0025"},
        ],
    )
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", openai_workload,
                                       "--since", "2026-11-03", "--until", "2026-11-05", "--format", "json")
    assert code == 0, err
    cells = {(c["day"], c["model"]): c for c in result["cells"]}
    explained = {k: {x["category"]: x["nano"] for x in c["explained"]} for k, c in cells.items()}

    d1 = cells[("2026-11-03", "gpt-4o-mini-2024-07-18")]
    assert d1["provider"]["cost_nano"] == 5_265_000  # 30,000 in (6,000 cached) / 3,000 out at 90% of the card
    assert d1["ledger"]["cost_nano"] == 3_900_000  # 2 x $0.00195
    assert d1["provider"]["tokens"] == {"input": 24_000, "cache_read": 6_000, "cache_write": 0, "cache_write_1h": 0,
                                        "output": 3_000}
    assert d1["ledger"]["tokens"]["input"] == 16_000 and d1["ledger"]["tokens"]["cache_read"] == 4_000
    # never seen: 8,000 uncached x $0.135/M + 2,000 cached x $0.0675/M + 1,000 out x $0.54/M
    assert explained[("2026-11-03", "gpt-4o-mini-2024-07-18")] == {"untracked": 1_755_000, "price": -390_000}
    assert d1["capture_rate"] == pytest.approx(3_900_000 / 5_265_000)

    private = cells[("2026-11-03", "acme-private-model")]
    assert private["ledger"]["cost_nano"] == 0 and private["provider"]["cost_nano"] == 1_200_000
    assert explained[("2026-11-03", "acme-private-model")] == {"unpriced": 1_200_000}
    assert private["ledger"]["unpriced_calls"] == 1

    d2 = cells[("2026-11-04", "gpt-4o-mini-2024-07-18")]
    assert (d2["provider"]["cost_nano"], d2["ledger"]["cost_nano"]) == (1_755_000, 1_950_000)
    assert explained[("2026-11-04", "gpt-4o-mini-2024-07-18")] == {"price": -195_000}  # the 10% discount

    assert ("2026-11-05", "gpt-4o-mini-2024-07-18") not in cells  # --until is exclusive
    assert explained[("2026-11-03", None)] == {"other_charges": 2_500_000}  # web search: money without tokens

    total = result["total"]
    assert total["provider"]["cost_nano"] == 5_265_000 + 1_200_000 + 1_755_000 + 2_500_000 == 10_720_000
    assert total["ledger"]["cost_nano"] == 5_850_000
    assert total["capture_rate"] == pytest.approx(5_850_000 / 10_720_000)
    assert [(x["category"], x["nano"]) for x in total["explained"]] == [
        ("other_charges", 2_500_000), ("untracked", 1_755_000), ("unpriced", 1_200_000), ("price", -585_000)]
    assert sum(x["nano"] for x in total["explained"]) == total["residual_nano"] == 10_720_000 - 5_850_000
    # the ledger's tokens cost 90% of the card on both days: a systematic discount, suggested once
    [suggestion] = result["suggestions"]
    assert (suggestion["model"], suggestion["discount"], suggestion["price_nano"]) == (MINI, 0.1, -585_000)


def test_openai_exact_match_and_stored_run(openai_workload, capsys, monkeypatch):
    book = admin_api.AdminBook(
        openai_usage=[_mini_usage(D1, 20_000, 4_000, 2_000), _mini_usage(D2, 10_000, 2_000, 1_000),
                      {"day": D1, "model": PRIVATE, "input_tokens": 1_000, "output_tokens": 100}],
        openai_costs=[*_mini_costs(D1, 16_000, 4_000, 2_000, "1"), *_mini_costs(D2, 8_000, 2_000, 1_000, "1")],
    )
    with admin_api.admin_server(book) as admin:
        code, result, _ = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", openai_workload,
                                     "--since", "2026-11-03", "--until", "2026-11-05", "--format", "json",
                                     "--fail-under", "0.98")
    assert code == 0
    assert result["total"]["capture_rate"] == 1.0
    assert result["total"]["provider"]["cost_nano"] == result["total"]["ledger"]["cost_nano"] == 5_850_000
    assert result["total"]["explained"] == [] or all(x["nano"] == 0 for x in result["total"]["explained"])
    with connect(openai_workload) as conn:
        [run] = store.history(conn)
    assert (run["provider"], run["since"], run["until"], run["capture_rate"]) == ("openai", "2026-11-03",
                                                                                   "2026-11-05", 1.0)
    assert run["provider_cost_nano"] == run["ledger_cost_nano"] == 5_850_000 and run["id"] == result["id"]
    assert main(["report", "--ledger", openai_workload, "--since", "2026-11-01", "--until", "2026-11-10"]) == 0
    assert ("invoice-matched (openai, 2026-11-03 .. 2026-11-05): provider $0.005850, ledger $0.005850, capture 100.0%"
            in capsys.readouterr().out)


def test_discount_suggested_when_systematic_and_fail_under_exits_1(openai_workload, capsys, monkeypatch):
    book = admin_api.AdminBook(
        openai_usage=[_mini_usage(D1, 20_000, 4_000, 2_000), _mini_usage(D2, 10_000, 2_000, 1_000)],
        openai_costs=[*_mini_costs(D1, 16_000, 4_000, 2_000), *_mini_costs(D2, 8_000, 2_000, 1_000)],
    )
    with admin_api.admin_server(book) as admin:
        code, out, err = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", openai_workload,
                                    "--since", "2026-11-03", "--until", "2026-11-05", "--by", "day,model",
                                    "--fail-under", "1.2")
    assert code == 1
    assert "capture rate 111.1% is under --fail-under 1.2" in err
    assert "Suggested: gpt-4o-mini-2024-07-18 is billed 10.00% under the rate card" in out
    assert "    percent: 10\n" in out
    assert "$-0.000585" in out  # the whole period's price residual: -10% of $0.00585


def test_rate_limit_mid_pagination_is_retried(openai_workload, capsys, monkeypatch):
    book = admin_api.AdminBook(
        openai_usage=[_mini_usage(D1, 20_000, 4_000, 2_000), _mini_usage(D3, 1, 0, 0)],
        openai_costs=[*_mini_costs(D1, 16_000, 4_000, 2_000, "1")],
        script={1: admin_api.rate_limited("openai", retry_after=0)},  # the usage report's second page
    )
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", openai_workload,
                                       "--since", "2026-11-03", "--until", "2026-11-06", "--format", "json")
    assert code == 0, err
    assert book.requests == 5  # usage: page 1, 429, page 2 again; costs: 2 pages
    assert result["total"]["provider"]["tokens"]["input"] == 16_000 + 1


def test_rate_limit_that_persists_is_one_line_and_nothing_is_stored(openai_workload, capsys, monkeypatch):
    limited = admin_api.rate_limited("openai", retry_after=0)
    book = admin_api.AdminBook(openai_usage=[_mini_usage(D1, 1, 0, 0)],
                               script={n: limited for n in range(1, 5)})
    with admin_api.admin_server(book) as admin:
        code, out, err = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", openai_workload,
                                    "--since", "2026-11-03", "--until", "2026-11-06")
    assert code == 2 and out == ""
    assert err.strip() == ("tokentrail: error: openai admin API still rate limited after 4 attempts: Rate limit reached"
                           " for organization usage requests; nothing was stored, try again later")
    with connect(openai_workload) as conn:
        assert store.history(conn) == []


def test_auth_error_and_missing_key_are_one_line(openai_workload, capsys, monkeypatch):
    with admin_api.admin_server(admin_api.AdminBook()) as admin:
        monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", "sk-ant-api03-not-an-admin-key")
        code = main(["reconcile", "anthropic", "--ledger", openai_workload, "--base-url", admin.url])
        err = capsys.readouterr().err
        assert code == 2
        assert err == ("tokentrail: error: anthropic admin API refused the key (401: invalid x-api-key): use an admin"
                       " key (ANTHROPIC_ADMIN_KEY)\n")
        monkeypatch.delenv("OPENAI_ADMIN_KEY", raising=False)
        assert main(["reconcile", "openai", "--ledger", openai_workload, "--base-url", admin.url]) == 2
        assert capsys.readouterr().err == ("tokentrail: error: OPENAI_ADMIN_KEY is not set: the openai admin API needs"
                                           " an admin key\n")


def test_partial_day_is_shown_not_stored(openai_workload, capsys, monkeypatch):
    with admin_api.admin_server(admin_api.AdminBook()) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", openai_workload,
                                       "--since", "2d", "--until", "now", "--format", "json")
    assert code == 0
    assert "is not over and the provider's figures for it are still growing: shown, not stored" in err
    assert "id" not in result
    with connect(openai_workload) as conn:
        assert store.history(conn) == []


def test_anthropic_cache_classes_to_the_nano(tmp_path, server, pipeline, anthropic_client, capsys, monkeypatch):
    usage = anthropic_api.usage_block(1_000, 200, cache_read_input_tokens=10_000, cache_creation_5m=2_000,
                                      cache_creation_1h=1_000)

    def claude():
        server.enqueue(FakeResponse(json=anthropic_api.message(model=SONNET, usage=usage)))
        anthropic_client.messages.create(model=SONNET, max_tokens=100, messages=[{"role": "user", "content": "hi"}])

    path = _ledger(tmp_path, pipeline, [(D1, claude), (D2, claude)])
    # per call: 1,000 x $3 + 10,000 x $0.30 + 2,000 x $3.75 + 1,000 x $6 + 200 x $15 (per 1M) = $0.0225
    row = {"model": SONNET, "workspace_id": "wrkspc_01", "uncached_input_tokens": 1_000,
           "cache_read_input_tokens": 10_000, "ephemeral_5m_input_tokens": 2_000, "ephemeral_1h_input_tokens": 1_000,
           "output_tokens": 200}
    cents_per_m = [("uncached_input_tokens", 300), ("cache_read_input_tokens", 30),
                   ("cache_creation.ephemeral_5m_input_tokens", 375),
                   ("cache_creation.ephemeral_1h_input_tokens", 600), ("output_tokens", 1500)]
    book = admin_api.AdminBook(
        anthropic_usage=[{"day": D1, **row}, {"day": D2, **row, "output_tokens": 400}],
        anthropic_costs=[
            {"day": day, "workspace_id": "wrkspc_01", "model": SONNET, "cost_type": "tokens", "token_type": t,
             "description": f"Claude Sonnet 4.5 Usage - {t}", "service_tier": "standard",
             "cents": str(Decimal(cents) * n / 10**6)}  # a decimal string in cents, as the API sends
            for day, extra in ((D1, 0), (D2, 200))
            for (t, cents), n in zip(cents_per_m, (1_000, 10_000, 2_000, 1_000, 200 + extra))
        ],
    )
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "anthropic", "--ledger", path,
                                       "--since", "2026-11-03", "--until", "2026-11-05", "--format", "json")
    assert code == 0, err
    assert all(r.headers.get("anthropic-version") == "2023-06-01" for r in admin.requests)
    cells = {c["day"]: c for c in result["cells"]}
    assert cells["2026-11-03"]["provider"]["cost_nano"] == cells["2026-11-03"]["ledger"]["cost_nano"] == 22_500_000
    assert cells["2026-11-03"]["provider"]["tokens"] == cells["2026-11-03"]["ledger"]["tokens"] == {
        "input": 1_000, "cache_read": 10_000, "cache_write": 2_000, "cache_write_1h": 1_000, "output": 200}
    assert cells["2026-11-03"]["capture_rate"] == 1.0
    # D2: 200 output tokens the ledger never saw, at $15/M
    assert [(x["category"], x["nano"]) for x in cells["2026-11-04"]["explained"]] == [("untracked", 3_000_000)]
    assert result["total"]["capture_rate"] == pytest.approx(45_000_000 / 48_000_000)


def test_migration_from_v3_keeps_rows_and_adds_join_key_and_v5_columns(tmp_path):
    path = str(tmp_path / "v3.db")
    connect(path, target=3).close()
    raw = sqlite3.connect(path)
    raw.execute("INSERT INTO spans (trace_id, span_id, name, start_ns, llm, provider, cost_nano)"
                " VALUES ('t', 's', 'chat', 1, 1, 'openai', 42)")
    raw.commit()
    raw.close()
    with connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        assert conn.execute("SELECT cost_nano, provider_project, api_key_hint, service_tier, request_max_tokens,"
                            " task_outcome, unverified FROM spans").fetchall() == [(42, None, None, None, None, None,
                                                                                   None)]
        assert conn.execute("SELECT COUNT(*) FROM reconciliations").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM adjustments").fetchone()[0] == 0


# --- join keys ----------------------------------------------------------------------------------------
SECRET = "sk-proj-" + "x" * 40 + "a1b2"


def test_join_keys_follow_each_client_and_a_changed_project(server, pipeline):
    """The join keys of an OpenAI client are made once per (project, organization, key): two
    clients get their own, and a client whose project is changed gets the new one."""
    import openai

    other = "sk-proj-" + "y" * 40 + "c3d4"
    with openai.OpenAI(base_url=openai_api.base_url(server), api_key=SECRET, project="proj_a", max_retries=0) as first, \
            openai.OpenAI(base_url=openai_api.base_url(server), api_key=other, project="proj_b", max_retries=0) as second:
        for client in (first, second, first):
            client.chat.completions.create(model=MINI, messages=[{"role": "user", "content": "hi"}])
        first.project = "proj_c"
        first.chat.completions.create(model=MINI, messages=[{"role": "user", "content": "hi"}])
    spans = sorted(pipeline.llm_spans(), key=lambda s: s.start_time)
    assert [(s.attributes[a.TOKENTRAIL_PROVIDER_PROJECT], s.attributes[a.TOKENTRAIL_PROVIDER_API_KEY_HINT])
            for s in spans] == [("proj_a", "sk-proj-...a1b2"), ("proj_b", "sk-proj-...c3d4"),
                                ("proj_a", "sk-proj-...a1b2"), ("proj_c", "sk-proj-...a1b2")]


def test_join_keys_on_spans_ledger_columns_and_the_project_grain(tmp_path, server, pipeline, capsys, monkeypatch):
    import openai

    with openai.OpenAI(base_url=openai_api.base_url(server), api_key=SECRET, project="proj_a",
                       organization="org_x", max_retries=0) as client:
        path = _ledger(tmp_path, pipeline, [(D1, _chat(client, MINI, prompt_tokens=10_000, cached_tokens=2_000,
                                                            completion_tokens=1_000))])
    [span] = pipeline.llm_spans()
    assert span.attributes[a.TOKENTRAIL_PROVIDER_PROJECT] == "proj_a"
    assert span.attributes[a.TOKENTRAIL_PROVIDER_ORGANIZATION] == "org_x"
    assert span.attributes[a.TOKENTRAIL_PROVIDER_API_KEY_HINT] == "sk-proj-...a1b2"
    assert not any(SECRET in str(v) for v in span.attributes.values())
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT provider_project, provider_organization, api_key_hint FROM spans WHERE llm = 1"
                            ).fetchall() == [("proj_a", "org_x", "sk-proj-...a1b2")]
    book = admin_api.AdminBook(
        openai_usage=[_mini_usage(D1, 10_000, 2_000, 1_000, project_id="proj_a"),
                      _mini_usage(D1, 5_000, 0, 500, project_id="proj_b")],  # another team's project
        openai_costs=[{**c, "project_id": "proj_a"} for c in _mini_costs(D1, 8_000, 2_000, 1_000, "1")]
        + [{**c, "project_id": "proj_b"} for c in _mini_costs(D1, 5_000, 0, 500, "1")],
    )
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", path, "--by", "day,project",
                                       "--since", "2026-11-03", "--until", "2026-11-04", "--format", "json")
    assert code == 0, err
    cells = {c["project"]: c for c in result["cells"]}
    assert cells["proj_a"]["capture_rate"] == 1.0 and cells["proj_a"]["ledger"]["cost_nano"] == 1_950_000
    # proj_b: 5,000 in x $0.15/M + 500 out x $0.60/M, all of it traffic the ledger never saw
    assert cells["proj_b"]["ledger"]["cost_nano"] == 0
    assert [(x["category"], x["nano"]) for x in cells["proj_b"]["explained"]] == [("untracked", 1_050_000)]


def test_join_keys_opt_out_and_anthropic_workspace(server, make_pipeline, monkeypatch):
    import anthropic

    monkeypatch.setenv("TOKENTRAIL_ANTHROPIC_WORKSPACE", "wrkspc_01")
    pipeline = make_pipeline()
    key = "sk-ant-api03-" + "y" * 40 + "igAA"
    with anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0) as client:
        client.messages.create(model=SONNET, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        monkeypatch.setenv("TOKENTRAIL_JOIN_KEYS", "false")
        client.messages.create(model=SONNET, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    first, second = pipeline.llm_spans()
    assert first.attributes[a.TOKENTRAIL_PROVIDER_WORKSPACE] == "wrkspc_01"
    assert first.attributes[a.TOKENTRAIL_PROVIDER_API_KEY_HINT] == "sk-ant-api03-yyy...igAA"
    assert a.TOKENTRAIL_PROVIDER_WORKSPACE not in second.attributes
    assert a.TOKENTRAIL_PROVIDER_API_KEY_HINT not in second.attributes


def test_no_usage_calls_are_counted_and_their_tokens_are_untracked(tmp_path, pipeline, openai_client, capsys,
                                                                    monkeypatch):
    path = _ledger(tmp_path, pipeline, [(D1, _chat(openai_client, MINI, omit_usage=True))])
    book = admin_api.AdminBook(openai_usage=[_mini_usage(D1, 1_000, 0, 100)],
                               openai_costs=_mini_costs(D1, 1_000, 0, 100, "1"))
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", path,
                                       "--since", "2026-11-03", "--until", "2026-11-04", "--format", "json")
    assert code == 0, err
    [cell] = result["cells"]
    assert cell["ledger"]["no_usage_calls"] == 1 and cell["ledger"]["cost_nano"] == 0
    # 1,000 in x $0.15/M + 100 out x $0.60/M: billed, never seen as tokens
    assert [(x["category"], x["nano"], x.get("calls")) for x in cell["explained"]] == [
        ("untracked", 210_000, None), ("no_usage", 0, 1)]


def test_api_key_grain_joins_the_redacted_key_to_the_ledger_hint(tmp_path, server, pipeline, capsys, monkeypatch):
    import openai

    with openai.OpenAI(base_url=openai_api.base_url(server), api_key=SECRET, max_retries=0) as client:
        path = _ledger(tmp_path, pipeline, [(D1, _chat(client, MINI, prompt_tokens=10_000, cached_tokens=2_000,
                                                            completion_tokens=1_000))])
    book = admin_api.AdminBook(
        openai_usage=[_mini_usage(D1, 10_000, 2_000, 1_000, api_key_id="key_ours"),
                      _mini_usage(D1, 5_000, 0, 500, api_key_id="key_script")],  # a key shared with a script
        openai_costs=[{**c, "api_key_id": "key_ours"} for c in _mini_costs(D1, 8_000, 2_000, 1_000, "1")]
        + [{**c, "api_key_id": "key_script"} for c in _mini_costs(D1, 5_000, 0, 500, "1")],
        openai_keys={"proj_a": {"key_ours": "sk-proj-****a1b2", "key_script": "sk-svc-****zz99"}},
    )
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", path, "--by", "api_key",
                                       "--since", "2026-11-03", "--until", "2026-11-04", "--format", "json")
    assert code == 0, err
    cells = {c["api_key"]: c for c in result["cells"]}
    assert set(cells) == {"sk-proj-...a1b2", "sk-svc-****zz99"}
    assert cells["sk-proj-...a1b2"]["capture_rate"] == 1.0
    assert [(x["category"], x["nano"]) for x in cells["sk-svc-****zz99"]["explained"]] == [("untracked", 1_050_000)]


def test_anthropic_api_key_grain_compares_tokens_per_key(tmp_path, server, pipeline, capsys, monkeypatch):
    import anthropic

    key = "sk-ant-api03-" + "y" * 40 + "igAA"
    usage = anthropic_api.usage_block(1_000, 200)
    with anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0) as client:
        def claude():
            server.enqueue(FakeResponse(json=anthropic_api.message(model=SONNET, usage=usage)))
            client.messages.create(model=SONNET, max_tokens=10, messages=[{"role": "user", "content": "hi"}])

        path = _ledger(tmp_path, pipeline, [(D1, claude)])
    row = {"day": D1, "model": SONNET, "uncached_input_tokens": 1_000, "output_tokens": 200}
    book = admin_api.AdminBook(
        anthropic_usage=[{**row, "api_key_id": "apikey_01ours"}, {**row, "api_key_id": "apikey_01other"}],
        anthropic_keys={"apikey_01ours": "sk-ant-api03-yyy...igAA", "apikey_01other": "sk-ant-api03-R2D...zzzz"},
    )
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "anthropic", "--ledger", path, "--by", "api_key",
                                       "--since", "2026-11-03", "--until", "2026-11-04", "--format", "json")
    assert code == 0, err
    cells = {c["api_key"]: c for c in result["cells"]}
    assert cells["sk-ant-api03-yyy...igAA"]["ledger"]["tokens"] == cells["sk-ant-api03-yyy...igAA"]["provider"]["tokens"]
    assert cells["sk-ant-api03-R2D...zzzz"]["ledger"]["calls"] == 0
    assert cells["sk-ant-api03-R2D...zzzz"]["provider"]["tokens"]["input"] == 1_000


def test_anthropic_workspace_of_a_call_from_its_key(tmp_path, server, pipeline, capsys, monkeypatch):
    import anthropic

    monkeypatch.delenv("TOKENTRAIL_ANTHROPIC_WORKSPACE", raising=False)
    key = "sk-ant-api03-" + "y" * 40 + "igAA"
    usage = anthropic_api.usage_block(1_000, 200)  # $0.003 + $0.003
    with anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0) as client:
        def claude():
            server.enqueue(FakeResponse(json=anthropic_api.message(model=SONNET, usage=usage)))
            client.messages.create(model=SONNET, max_tokens=10, messages=[{"role": "user", "content": "hi"}])

        path = _ledger(tmp_path, pipeline, [(D1, claude)])
    row = {"day": D1, "model": SONNET, "uncached_input_tokens": 1_000, "output_tokens": 200}
    cost = {"day": D1, "model": SONNET, "cost_type": "tokens", "service_tier": "standard"}
    book = admin_api.AdminBook(
        anthropic_usage=[{**row, "workspace_id": "wrkspc_ours"}, {**row, "workspace_id": "wrkspc_lab"}],
        anthropic_costs=[{**cost, "workspace_id": w, "token_type": t, "cents": c}
                         for w in ("wrkspc_ours", "wrkspc_lab")
                         for t, c in (("uncached_input_tokens", "0.3"), ("output_tokens", "0.3"))],
        anthropic_keys={"apikey_01ours": ("sk-ant-api03-yyy...igAA", "wrkspc_ours")},
    )
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "anthropic", "--ledger", path, "--by", "workspace",
                                       "--since", "2026-11-03", "--until", "2026-11-04", "--format", "json")
    assert code == 0, err
    cells = {c["workspace"]: c for c in result["cells"]}
    assert set(cells) == {"wrkspc_ours", "wrkspc_lab"}
    assert cells["wrkspc_ours"]["ledger"]["cost_nano"] == cells["wrkspc_ours"]["provider"]["cost_nano"] == 6_000_000
    assert [(x["category"], x["nano"]) for x in cells["wrkspc_lab"]["explained"]] == [("untracked", 6_000_000)]


# --- service tiers -----------------------------------------------------------------------------------
def test_a_tier_the_ledger_did_not_price_is_explained_as_tier_not_as_a_discount(tmp_path, pipeline, openai_client,
                                                                                  capsys, monkeypatch):
    usage = {"model": MINI, "prompt_tokens": 10_000, "cached_tokens": 2_000, "completion_tokens": 1_000}

    def chat(tier):
        return lambda: openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], service_tier=tier,
            extra_headers={openai_api.HEADER: json.dumps({**usage, "service_tier": tier})})

    # standard $0.00195 a call; priority ($0.25 / $0.125 cached / $1.00 per M): $0.00325
    path = _ledger(tmp_path, pipeline, [(D1, chat("default")), (D1, chat("priority")), (D1, chat("default"))])
    with sqlite3.connect(path) as conn:
        assert sorted(conn.execute("SELECT service_tier, pricing_tier, cost_nano FROM spans WHERE llm = 1")) == [
            ("default", "standard", 1_950_000), ("default", "standard", 1_950_000), ("priority", "priority", 3_250_000)]
    flex = {"input": "0.075", "cached input": "0.0375", "output": "0.3"}  # what the provider billed per M at flex
    book = admin_api.AdminBook(
        openai_usage=[_mini_usage(D1, 10_000, 2_000, 1_000, service_tier="default", batch=False),
                      _mini_usage(D1, 10_000, 2_000, 1_000, service_tier="priority", batch=False),
                      # the third call ran at flex (the org's default for this key), the ledger priced it standard
                      _mini_usage(D1, 10_000, 2_000, 1_000, service_tier="flex", batch=False)],
        openai_costs=[*_mini_costs(D1, 8_000, 2_000, 1_000, "1"),
                      {"day": D1, "line_item": f"priority | {MINI}, input", "usd": "0.002"},
                      {"day": D1, "line_item": f"priority | {MINI}, cached input", "usd": "0.00025"},
                      {"day": D1, "line_item": f"priority | {MINI}, output", "usd": "0.001"},
                      *({"day": D1, "line_item": f"flex | {MINI}, {kind}", "usd": str(Decimal(rate) * n / 10**6)}
                        for (kind, rate), n in zip(flex.items(), (8_000, 2_000, 1_000)))],
    )
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", path,
                                       "--since", "2026-11-03", "--until", "2026-11-04", "--format", "json")
    assert code == 0, err
    usage_query = next(r for r in admin.requests if r.path.endswith("/usage/completions"))
    assert {"batch", "service_tier", "model"} <= set(usage_query.query["group_by"])
    [cell] = result["cells"]
    assert cell["provider"]["cost_nano"] == 1_950_000 + 3_250_000 + 975_000  # flex: 600 + 75 + 300 micro-dollars
    assert cell["ledger"]["cost_nano"] == 1_950_000 + 3_250_000 + 1_950_000
    # the priority call meets the provider's priority bucket; the flex one is "different tier", not "different price"
    assert [(x["category"], x["nano"], x.get("tokens")) for x in cell["explained"]] == [("tier", -975_000, 11_000)]
    assert result["suggestions"] == []  # no rate-card discount from a tier difference
    assert cell["tiers"] == {
        "flex": {"provider_tokens": 11_000, "provider_cost_nano": 975_000, "ledger_tokens": 0, "ledger_cost_nano": 0},
        "priority": {"provider_tokens": 11_000, "provider_cost_nano": 3_250_000, "ledger_tokens": 11_000,
                     "ledger_cost_nano": 3_250_000},
        "standard": {"provider_tokens": 11_000, "provider_cost_nano": 1_950_000, "ledger_tokens": 22_000,
                     "ledger_cost_nano": 3_900_000}}
    assert sum(x["nano"] for x in cell["explained"]) == cell["residual_nano"]


def test_costs_that_name_no_tier_compare_the_cell_as_one(tmp_path, pipeline, openai_client, capsys, monkeypatch):
    usage = {"model": MINI, "prompt_tokens": 10_000, "cached_tokens": 2_000, "completion_tokens": 1_000}
    call = lambda: openai_client.chat.completions.create(  # noqa: E731
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers={openai_api.HEADER: json.dumps(usage)})
    path = _ledger(tmp_path, pipeline, [(D1, call)])
    book = admin_api.AdminBook(  # usage says flex, the cost lines do not say: the tiers cannot be told apart
        openai_usage=[_mini_usage(D1, 10_000, 2_000, 1_000, service_tier="flex", batch=False)],
        openai_costs=_mini_costs(D1, 8_000, 2_000, 1_000, "0.5"))
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", path,
                                       "--since", "2026-11-03", "--until", "2026-11-04", "--format", "json")
    assert code == 0, err
    [cell] = result["cells"]
    assert [(x["category"], x["nano"]) for x in cell["explained"]] == [("price", -975_000)]


def test_anthropic_batch_tier_from_the_usage_and_cost_reports(tmp_path, server, pipeline, anthropic_client, capsys,
                                                              monkeypatch):
    def claude():
        server.enqueue(FakeResponse(json=anthropic_api.message(model=SONNET, usage=anthropic_api.usage_block(8_000, 1_200))))
        anthropic_client.messages.create(model=SONNET, max_tokens=2_000, messages=[{"role": "user", "content": "hi"}])

    path = _ledger(tmp_path, pipeline, [(D1, claude)])  # 8,000 in / 1,200 out at $3 / $15 per M: $0.042, standard
    row = {"day": D1, "model": SONNET, "uncached_input_tokens": 8_000, "output_tokens": 1_200, "service_tier": "batch"}
    cost = {"day": D1, "model": SONNET, "cost_type": "tokens", "service_tier": "batch"}
    book = admin_api.AdminBook(  # billed as batch, at half price: $0.012 + $0.009
        anthropic_usage=[row],
        anthropic_costs=[{**cost, "token_type": "uncached_input_tokens", "cents": "1.2"},
                         {**cost, "token_type": "output_tokens", "cents": "0.9"}])
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "anthropic", "--ledger", path,
                                       "--since", "2026-11-03", "--until", "2026-11-04", "--format", "json")
    assert code == 0, err
    usage_query = next(r for r in admin.requests if r.path.endswith("/usage_report/messages"))
    assert "service_tier" in usage_query.query["group_by[]"]
    [cell] = result["cells"]
    assert (cell["provider"]["cost_nano"], cell["ledger"]["cost_nano"]) == (21_000_000, 42_000_000)
    assert [(x["category"], x["nano"]) for x in cell["explained"]] == [("tier", -21_000_000)]


# --- paging of the admin key lists -------------------------------------------------------------------
def test_key_lists_are_read_page_by_page_through_a_429(tmp_path, server, pipeline, capsys, monkeypatch):
    import openai

    with openai.OpenAI(base_url=openai_api.base_url(server), api_key=SECRET, max_retries=0) as client:
        path = _ledger(tmp_path, pipeline, [(D1, _chat(client, MINI, prompt_tokens=10_000, cached_tokens=2_000,
                                                            completion_tokens=1_000))])
    book = admin_api.AdminBook(
        openai_usage=[_mini_usage(D1, 10_000, 2_000, 1_000, api_key_id="key_ours")],
        openai_costs=[{**c, "api_key_id": "key_ours"} for c in _mini_costs(D1, 8_000, 2_000, 1_000, "1")],
        # 3 projects and 3 keys in the first: two pages of each at page_size 2; ours is on the second page
        openai_keys={"proj_a": {"key_1": "sk-proj-****0001", "key_2": "sk-proj-****0002", "key_ours": "sk-proj-****a1b2"},
                     "proj_b": {}, "proj_c": {"key_3": "sk-proj-****0003"}},
        # requests: usage, costs, projects page 1, proj_a keys page 1, then a 429 on proj_a keys page 2
        script={4: admin_api.rate_limited("openai", retry_after=0)},
    )
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "openai", "--ledger", path, "--by", "api_key",
                                       "--since", "2026-11-03", "--until", "2026-11-04", "--format", "json")
    assert code == 0, err
    lists = [(r.path, r.query.get("after", [None])[0]) for r in admin.requests if "/projects" in r.path]
    assert lists == [("/v1/organization/projects", None), ("/v1/organization/projects/proj_a/api_keys", None),
                     ("/v1/organization/projects/proj_a/api_keys", "key_2"),  # the 429
                     ("/v1/organization/projects/proj_a/api_keys", "key_2"),  # retried
                     ("/v1/organization/projects/proj_b/api_keys", None),
                     ("/v1/organization/projects", "proj_b"), ("/v1/organization/projects/proj_c/api_keys", None)]
    [cell] = result["cells"]
    assert cell["api_key"] == "sk-proj-...a1b2" and cell["capture_rate"] == 1.0


def test_anthropic_key_list_over_several_pages(tmp_path, server, pipeline, capsys, monkeypatch):
    import anthropic

    monkeypatch.delenv("TOKENTRAIL_ANTHROPIC_WORKSPACE", raising=False)
    key = "sk-ant-api03-" + "y" * 40 + "igAA"
    with anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0) as client:
        def claude():
            server.enqueue(FakeResponse(json=anthropic_api.message(model=SONNET,
                                                                   usage=anthropic_api.usage_block(1_000, 200))))
            client.messages.create(model=SONNET, max_tokens=10, messages=[{"role": "user", "content": "hi"}])

        path = _ledger(tmp_path, pipeline, [(D1, claude)])
    row = {"day": D1, "model": SONNET, "uncached_input_tokens": 1_000, "output_tokens": 200, "workspace_id": "wrkspc_ours"}
    book = admin_api.AdminBook(
        anthropic_usage=[row],
        anthropic_costs=[{"day": D1, "model": SONNET, "cost_type": "tokens", "workspace_id": "wrkspc_ours",
                          "token_type": t, "cents": "0.3"} for t in ("uncached_input_tokens", "output_tokens")],
        anthropic_keys={f"apikey_0{i}": (f"sk-ant-api03-abc...{i:04d}", "wrkspc_other") for i in range(4)}
        | {"apikey_9ours": ("sk-ant-api03-yyy...igAA", "wrkspc_ours")},  # the fifth key: the third page
    )
    with admin_api.admin_server(book) as admin:
        code, result, err = _reconcile(capsys, monkeypatch, admin, "anthropic", "--ledger", path, "--by", "workspace",
                                       "--since", "2026-11-03", "--until", "2026-11-04", "--format", "json")
    assert code == 0, err
    pages = [r.query.get("after_id", [None])[0] for r in admin.requests if r.path == "/v1/organizations/api_keys"]
    assert pages == [None, "apikey_01", "apikey_03"]
    [cell] = result["cells"]
    assert cell["workspace"] == "wrkspc_ours"
    assert cell["ledger"]["cost_nano"] == cell["provider"]["cost_nano"] == 6_000_000
