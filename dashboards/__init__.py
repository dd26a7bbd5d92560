"""Grafana dashboards, Prometheus alert rules and the names they query, as code.

- ``promnames``: the Prometheus names OTLP metrics get on the Collector path (units, ``_total``).
- ``queries``: PromQL built from the semconv registry (exact spend over a window: ``delta_in``).
- ``build``: the three dashboards (grafana-foundation-sdk); ``python -m tokentrail.dashboards.build``.
- ``alerts``: alert rules and their promtool unit tests; ``python -m tokentrail.dashboards.alerts``.
"""
