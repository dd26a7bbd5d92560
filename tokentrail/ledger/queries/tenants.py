"""``tenants``: per-tenant cache-hit dispersion and cost per request, most expensive per request first."""

from __future__ import annotations

import statistics

from tokentrail.ledger.queries.common import LedgerBase, Period, Where, label, percentile, ratio, selection, usd


class TenantsQuery(LedgerBase):
    def tenants(self, period: Period, where: Where = ()) -> list[dict]:
        """Per-tenant cache-hit dispersion and cost per request, most expensive per request first."""
        cond, params = selection(period, where)
        per: dict[str | None, dict] = {}
        sql = (
            "SELECT tenant, input_tokens, cache_read_tokens, cost_nano, start_ns / 86400000000000"
            f" FROM spans WHERE llm = 1 AND {cond}"
        )
        for tenant, inp, cread, cost, day in self.conn.execute(sql, params):
            t = per.setdefault(tenant, {"calls": 0, "priced": 0, "cost": 0, "input": 0, "cread": 0, "ratios": [],
                                        "days": set()})
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
            per_day = t["cost"] // len(t["days"]) if t["days"] else None
            rows.append({
                "tenant": label("tenant", tenant),
                "calls": t["calls"],
                "cache_hit_median": statistics.median(ratios) if ratios else None,
                "cache_hit_p10": percentile(ratios, 0.10),
                "cache_hit_ratio": ratio(t["cread"], t["input"]),
                "cost_per_request_nano_usd": per_request,
                "cost_per_request_usd": None if per_request is None else str(usd(per_request)),
                "cost_per_active_day_nano_usd": per_day,
                "cost_nano_usd": t["cost"],
                "cost_usd": str(usd(t["cost"])),
            })
        rows.sort(key=lambda r: (-(r["cost_per_request_nano_usd"] or 0), r["cache_hit_median"] or 0, r["tenant"]))
        return rows
