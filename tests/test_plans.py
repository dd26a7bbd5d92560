"""tokentrail.plans: plans and revenue from YAML or a billing CSV, in nano-USD, with one-line errors."""

from __future__ import annotations

import pytest

from tokentrail import plans
from tokentrail.plans import Plans, PlansError

NANO = 10**9


def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return str(path)


def test_yaml_plans_tenants_and_a_revenue_that_wins_over_the_price(tmp_path):
    path = _write(tmp_path, "plans.yaml", """
plans:
  free: 0
  starter: 19
  pro: 99.99
tenants:
  acme: pro
  globex: starter
  initech: {plan: pro, monthly_revenue: 80.5}
  wonka: free
""")
    p = plans.load(path)
    assert p.source == path
    assert p.tenants == {"acme": "pro", "globex": "starter", "initech": "pro", "wonka": "free"}
    assert p.plan_of("acme") == "pro" and p.plan_of("nobody") is None
    assert p.plan_price_nano("pro") == 99_990_000_000 and p.plan_price_nano("gold") is None
    assert p.monthly_revenue_nano("acme") == 99_990_000_000  # the plan's price
    assert p.monthly_revenue_nano("initech") == 80_500_000_000  # its own revenue wins
    assert p.monthly_revenue_nano("wonka") == 0  # a free plan earns $0: known, not unknown
    assert p.monthly_revenue_nano("nobody") is None


def test_amounts_are_exact_to_the_nano_dollar_not_floats(tmp_path):
    # 0.1 + 0.2 as floats is 0.30000000000000004; as plans' amounts they are exact
    p = plans.load(_write(tmp_path, "p.yml", "plans: {a: 0.1, b: 0.2, c: '19.000000001'}\n"))
    assert p.plan_price_nano("a") + p.plan_price_nano("b") == 300_000_000
    assert p.plan_price_nano("c") == 19 * NANO + 1


def test_csv_as_a_billing_system_exports_it(tmp_path):
    # a byte-order mark, other columns, another column order, header case and spaces, a blank line
    path = _write(tmp_path, "billing.csv", "Customer ID,Monthly_Revenue , Tenant,plan\n"
                                           "cus_1,19.00,acme,starter\n\ncus_2,1234.5,globex,enterprise\n",
                  encoding="utf-8-sig")
    p = plans.load(path)
    assert p.tenants == {"acme": "starter", "globex": "enterprise"}
    assert p.monthly_revenue_nano("acme") == 19 * NANO
    assert p.monthly_revenue_nano("globex") == 1_234_500_000_000
    assert p.plan_price_nano("starter") is None  # a CSV gives each tenant's revenue, no list price
    assert p.source == path


def test_load_reads_the_environment_and_is_empty_without_it(tmp_path, monkeypatch):
    monkeypatch.delenv(plans.ENV_PLANS, raising=False)
    empty = plans.load()
    assert empty == Plans() and not empty and empty.tenants == {} and empty.monthly_revenue_nano("acme") is None
    path = _write(tmp_path, "p.yaml", "plans: {pro: 99}\ntenants: {acme: pro}\n")
    monkeypatch.setenv(plans.ENV_PLANS, path)
    assert plans.load().monthly_revenue_nano("acme") == 99 * NANO
    other = _write(tmp_path, "q.yaml", "plans: {pro: 49}\ntenants: {acme: pro}\n")
    assert plans.load(other).monthly_revenue_nano("acme") == 49 * NANO  # an explicit path wins


def test_an_empty_file_is_no_plans(tmp_path):
    assert plans.load(_write(tmp_path, "p.yaml", "")).tenants == {}
    assert plans.load(_write(tmp_path, "p.csv", "")).tenants == {}


@pytest.mark.parametrize("name, text, expected", [
    ("p.yaml", "plans: {pro: 99}\ntenants: {acme: gold}\n",
     "p.yaml: tenants.acme: plan 'gold' is not in plans (known: pro)"),
    ("p.yaml", "plans: {pro: -5}\n", "p.yaml: plans.pro=-5: expected an amount in USD of 0 or more"),
    ("p.yaml", "plans: {pro: nineteen}\n", "p.yaml: plans.pro='nineteen': expected an amount in USD such as 19"),
    ("p.yaml", "plans: {pro: true}\n", "p.yaml: plans.pro=True: expected an amount in USD"),
    ("p.yaml", "plans: {pro: .nan}\n", "p.yaml: plans.pro=nan: expected an amount in USD of 0 or more"),
    ("p.yaml", "plans: {pro: 0.0000000001}\n", "p.yaml: plans.pro=1e-10: more precise than a nano-dollar"),
    ("p.yaml", "plan: {pro: 99}\n", "p.yaml: unknown key 'plan' (expected plans, tenants)"),
    ("p.yaml", "- pro\n", "p.yaml: expected a mapping with 'plans' and 'tenants'"),
    ("p.yaml", "plans: [19, 99]\n", "p.yaml: plans: expected a mapping"),
    ("p.yaml", "plans: {pro: 99}\ntenants: {acme: {plan: pro, revenue: 5}}\n",
     "p.yaml: tenants.acme: unknown key 'revenue' (expected plan, monthly_revenue)"),
    ("p.yaml", "plans: {pro: 99}\ntenants: {acme: {plan: pro, monthly_revenue: -1}}\n",
     "p.yaml: tenants.acme.monthly_revenue=-1: expected an amount in USD of 0 or more"),
    ("p.yaml", "plans: {pro: 99}\ntenants: {acme: {monthly_revenue: 5}}\n",
     "p.yaml: tenants.acme.plan: expected a name, got None"),
    ("p.yaml", "plans: {pro: 99}\ntenants:\n  acme: [pro]\n", "p.yaml: tenants.acme: expected a name, got ['pro']"),
    ("p.yaml", "plans: {pro: 99\n", "p.yaml line 2: not valid YAML"),
    ("b.csv", "tenant,plan\nacme,pro\n", "b.csv line 1: missing column 'monthly_revenue'"),
    ("b.csv", "tenant,plan,monthly_revenue\nacme,pro,99\nglobex,pro,$19\n",
     "b.csv line 3: monthly_revenue='$19': expected an amount in USD such as 19"),
    ("b.csv", "tenant,plan,monthly_revenue\nacme,pro,99\nacme,pro,19\n",
     "b.csv line 3: tenant 'acme' repeated (first on line 2)"),
    ("b.csv", "tenant,plan,monthly_revenue\nacme,,99\n", "b.csv line 2: plan: expected a name, got ''"),
    ("b.csv", "tenant,plan,monthly_revenue\nacme,pro\n", "b.csv line 2: 2 fields, too few"),
])
def test_a_bad_file_is_one_line_naming_file_entry_and_field(tmp_path, name, text, expected):
    path = _write(tmp_path, name, text)
    with pytest.raises(PlansError) as caught:
        plans.load(path)
    message = str(caught.value)
    assert message.startswith(str(tmp_path)) and "\n" not in message
    assert expected in message.replace(str(tmp_path) + "/", "")
    assert isinstance(caught.value, ValueError)


def test_a_missing_or_binary_file_is_a_plans_error(tmp_path):
    with pytest.raises(PlansError, match=r"plans file .*nope\.yaml: cannot read \(No such file or directory\)"):
        plans.load(str(tmp_path / "nope.yaml"))
    binary = tmp_path / "p.csv"
    binary.write_bytes(b"\xff\xfe\x00tenant")
    with pytest.raises(PlansError, match="not UTF-8 text"):
        plans.load(str(binary))


def test_a_file_the_csv_reader_refuses_is_a_plans_error_with_its_line(tmp_path):
    path = _write(tmp_path, "b.csv", "tenant,plan,monthly_revenue\nacme,pro,99\n" + "x" * 200_000 + ",pro,1\n")
    with pytest.raises(PlansError, match=r"b\.csv line 3: not CSV \(field larger than field limit"):
        plans.load(path)
