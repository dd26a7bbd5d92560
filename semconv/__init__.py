"""Every attribute and metric name tokentrail reads or writes.

The names live in ``registry.yaml``; ``attributes.py`` and ``metrics.py`` are generated
from it. Code elsewhere imports names from here and never spells them as literals.
"""

from tokentrail.semconv import attributes, metrics

__all__ = ["attributes", "metrics"]
