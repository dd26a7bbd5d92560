"""Alert rules: generated files are current, promtool accepts them, and every rule is unit-tested with
`promtool test rules` (both firing and quiet cases)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tokentrail.dashboards import alerts

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (.ci/run installs it)")


def test_committed_rule_files_are_current():
    assert alerts.stale() == [], "run: python -m tokentrail.dashboards.alerts"


def test_every_alert_has_a_firing_and_a_quiet_case():
    names = {r["alert"] for g in alerts.rules()["groups"] for r in g["rules"] if "alert" in r}
    assert len(names) == 15
    cases = [c for t in alerts.unit_tests()["tests"] for c in t.get("alert_rule_test", [])]
    assert names == {c["alertname"] for c in cases if c["exp_alerts"]}
    assert names == {c["alertname"] for c in cases if not c["exp_alerts"]}


def test_every_rule_has_a_runbook_description():
    for group in alerts.rules()["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in {"info", "warning", "critical"}
                assert len(rule["annotations"]["description"]) > 40, rule["alert"]


@pytest.mark.slow
@needs_promtool
def test_promtool_check_rules():
    out = subprocess.run([PROMTOOL, "check", "rules", alerts.RULES_FILE], cwd=alerts.ALERTS_DIR,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    rules = sum(len(g["rules"]) for g in yaml.safe_load((alerts.ALERTS_DIR / alerts.RULES_FILE).read_text())["groups"])
    assert f"SUCCESS: {rules} rules found" in out.stdout


@pytest.mark.slow
@needs_promtool
def test_promtool_test_rules():
    out = subprocess.run([PROMTOOL, "test", "rules", alerts.TESTS_FILE], cwd=alerts.ALERTS_DIR,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
