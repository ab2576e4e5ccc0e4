"""litefs: xCAT statelite rebuilt as a FUSE overlay filesystem service.

The public surface is re-exported here; implementation lives in the modules named for what
they hold (plan, resolve, options, schema, ...).
"""

from litefs.errors import LitefsError, PlanError, UsageError
from litefs.options import Family
from litefs.plan import PLAN_VERSION, Plan, Rule, Source
from litefs.resolve import LayerRef, Resolution, resolve

__all__ = [
    "PLAN_VERSION",
    "Family",
    "LayerRef",
    "LitefsError",
    "Plan",
    "PlanError",
    "Resolution",
    "Rule",
    "Source",
    "UsageError",
    "resolve",
]


def __getattr__(name: str) -> str:
    # PEP 562: the version comes from the package metadata, read only when asked for.
    if name == "__version__":
        from litefs.wellknown import version

        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
