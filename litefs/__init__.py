"""litefs: xCAT statelite rebuilt as a FUSE overlay filesystem service.

The public surface is re-exported here; implementation lives in the modules named for what
they hold (plan, resolve, options, schema, ...).
"""

from litefs.errors import LitefsError, PlanError, UsageError
from litefs.options import Family
from litefs.plan import PLAN_VERSION, Plan, Rule, Source
from litefs.resolve import Layer, Resolution, resolve

__all__ = [
    "PLAN_VERSION",
    "Family",
    "Layer",
    "LitefsError",
    "Plan",
    "PlanError",
    "Resolution",
    "Rule",
    "Source",
    "UsageError",
    "resolve",
]
__version__ = "0.1.0"
