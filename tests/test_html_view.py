"""``tokentrail view``: one offline HTML page from the demo ledger (real openai SDK, fake provider, real
pipeline), read back from a real headless Chromium after its script ran: its numbers are the ledger's."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tokentrail.cli import _common as c
from tokentrail.cli import main, view
from tokentrail.cli.demo import workload
from tokentrail.ledger.queries import Ledger, Period

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(view.chromium() is None, reason="chromium not installed (.ci/run installs it)")]


class DomIds(HTMLParser):
    """data-testid -> [(attributes, text)] of a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, list[tuple[dict, str]]] = {}
        self.row: dict = {}
        self._open: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self.row = attrs
        self._open.append((attrs.get("data-testid"), {**self.row, **attrs}))

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        if self._open and self._open[-1][0]:
            testid, attrs = self._open[-1]
            self.found.setdefault(testid, []).append((attrs, data.strip()))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("view")
    ledger = str(folder / "demo.db")
    workload.run_workload(ledger, seed=7)
    out = folder / "view.html"
    assert main(["view", "--ledger", ledger, "--out", str(out), "--png", str(folder / "view.png")]) == 0
    dom = view.run_chromium(out, "--dump-dom", "--virtual-time-budget=2000")
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = DomIds()
    parsed.feed(dom.stdout)
    return {"ledger": ledger, "html": out.read_text(), "dom": dom.stdout, "ids": parsed.found,
            "png": folder / "view.png"}


def test_the_page_is_self_contained_and_offline(page):
    html = page["html"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # no CDN, no remote asset
    assert "<link" not in html and "@import" not in html and "url(" not in html


def test_the_numbers_on_the_page_are_the_ledgers(page):
    everything = Period.parse(None, None)
    with Ledger(page["ledger"]) as ledger:
        by_tenant = ledger.report(["tenant"], everything)
        by_feature = ledger.report(["feature"], everything)
        tenants = {t["tenant"]: t for t in ledger.tenants(everything)}
        top = ledger.top(everything, limit=8)
    ids = page["ids"]
    total = by_tenant["total"]
    assert ids["card-total"][0][1] == c.usd(total["cost_nano_usd"])
    assert ids["card-calls"][0][1] == f"{total['calls']:,}"
    assert ids["card-unattributed"][0][1].startswith(c.usd(total["unattributed_cost_nano_usd"]))
    shown = {attrs["data-tenant"]: (attrs["data-nano"], text) for attrs, text in ids["tenant-cost"]}
    for row in by_tenant["rows"][:10]:
        nano = row["cost_nano_usd"]
        assert shown[row["tenant"]] == ("" if nano is None else str(nano), c.cost(nano, row)), row["tenant"]
    assert shown["hooli"][1] == "no cost (6 unpriced)"  # never $0
    features = {attrs["data-feature"]: text for attrs, text in ids["feature-cost"]}
    assert features == {r["feature"]: c.cost(r["cost_nano_usd"], r) for r in by_feature["rows"][:10]}
    medians = {attrs["data-tenant"]: text for attrs, text in ids["cache-median"]}
    assert medians == {t: c.pct(v["cache_hit_median"]) for t, v in tenants.items() if v["cache_hit_median"] is not None}
    assert [text for _, text in ids["traces-cost"]] == [c.cost(t["cost_nano_usd"], t) for t in top["traces"]]
    assert [text for _, text in ids["tasks-cost"]] == [c.cost(t["cost_nano_usd"], t) for t in top["tasks"]]
    # the page's own script re-added the tenant costs in the browser
    [(attrs, text)] = ids["check"]
    assert text == "tenant rows add up to the total"
    assert int(attrs["data-nano"]) == total["cost_nano_usd"]


def test_the_screenshot_is_a_picture(page):
    png = page["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a real rendering, not a blank page
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 2000)


def test_view_errors_are_one_line(tmp_path, capsys):
    assert main(["view", "--ledger", str(tmp_path / "none.db"), "--out", str(tmp_path / "v.html")]) == 2
    assert main(["view", "--ledger", str(tmp_path / "none.db"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err
