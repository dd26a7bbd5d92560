"""``tenants``: per-tenant cache-hit dispersion and cost per request, most expensive per request first."""

from __future__ import annotations

import statistics

from tokentrail.ledger import adjustments
from tokentrail.ledger.queries.common import (
    NO_COST_KIND, LedgerBase, Period, Where, label, no_cost_counts, percentile, ratio, selection, usd,
)


class TenantsQuery(LedgerBase):
    def tenants(self, period: Period, where: Where = ()) -> list[dict]:
        """Per-tenant cache-hit dispersion and cost per request, most expensive per request first."""
        cond, params = selection(period, where)
        per: dict[str | None, dict] = {}
        sql = (
            f"SELECT tenant, input_tokens, cache_read_tokens, cost_nano, start_ns / 86400000000000, {NO_COST_KIND}"
            f" FROM spans WHERE llm = 1 AND {cond}"
        )
        for tenant, inp, cread, cost, day, no_cost in self.conn.execute(sql, params):
            t = per.setdefault(tenant, {"calls": 0, "priced": 0, "cost": 0, "input": 0, "cread": 0, "ratios": [],
                                        "days": set(), "no_cost": {}})
            if no_cost:
                t["no_cost"][no_cost] = t["no_cost"].get(no_cost, 0) + 1
            t["calls"] += 1
            t["days"].add(day)
            if cost is not None:
                t["priced"] += 1
                t["cost"] += cost
            if inp:
                t["input"] += inp
                t["cread"] += cread or 0
                t["ratios"].append((cread or 0) / inp)
        rows = []
        for tenant, t in per.items():
            ratios = sorted(t["ratios"])
            per_request = t["cost"] // t["priced"] if t["priced"] else None
            per_day = t["cost"] // len(t["days"]) if t["priced"] else None
            cost = t["cost"] if t["priced"] else None  # nothing priced: unknown, not $0
            rows.append({
                "tenant": label("tenant", tenant),
                "calls": t["calls"],
                "cache_hit_median": statistics.median(ratios) if ratios else None,
                "cache_hit_p10": percentile(ratios, 0.10),
                "cache_hit_ratio": ratio(t["cread"], t["input"]),
                "cost_per_request_nano_usd": per_request,
                "cost_per_request_usd": None if per_request is None else str(usd(per_request)),
                "cost_per_active_day_nano_usd": per_day,
                "cost_nano_usd": cost,
                "cost_usd": None if cost is None else str(usd(cost)),
                **no_cost_counts(t["no_cost"]),
            })
        if found := adjustments.sums(self.conn, ["tenant"], period, where):  # re-priced: original, adjustments, net
            deltas = adjustments.by_label(found, ["tenant"])
            for row in rows:
                adjustments.add_net(row, deltas.get((row["tenant"],), 0))
        rows.sort(key=lambda r: (-(r["cost_per_request_nano_usd"] or 0), r["cache_hit_median"] or 0, r["tenant"]))
        return rows
