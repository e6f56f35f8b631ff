"""``user_stacklevel()``: the ``stacklevel`` that makes a convscope warning point at the user's own line."""

from __future__ import annotations

import sys
from types import FrameType

# Public entry points (module, function): warnings point at the line that called the outermost of them.
_ENTRY_POINTS = frozenset({
    ("convscope.scope", "attribute"), ("convscope.scope", "sanity_check"),
    ("convscope.attribution.api", "attribute"), ("convscope.attribution.sanity", "sanity_check"),
    ("convscope.attribution.metrics", "deletion"), ("convscope.attribution.metrics", "insertion"),
    ("convscope.scope", "maximize"), ("convscope.scope", "maximize_layer"),
    ("convscope.optim.optimize", "maximize"), ("convscope.optim.optimize", "maximize_layer"),
    ("convscope.featuremaps", "grid"), ("convscope.featuremaps", "figure"),
    ("convscope.render.picture", "save"), ("convscope.render.picture", "_repr_png_"),
})  # fmt: skip


def _in_convscope(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__", "")
    return bool(name == "convscope" or name.startswith("convscope."))


def user_stacklevel() -> int:
    """``stacklevel`` for ``warnings.warn`` that points at the call of the public entry point.

    Walking out from the function that warns, through convscope's own frames, the level just past the
    outermost entry point (``Scope.attribute``, ``Scope.maximize``, ``FeatureMaps.grid``, ``save`` ...)
    wins: the user's line, also when that line is itself in convscope (the CLI's or the demo's call of
    ``scope.attribute``, not the ``convscope`` console script). Without an entry point on the stack: the
    first frame outside convscope.
    """
    frame: FrameType | None = sys._getframe(1)
    level, entry = 1, 0
    while frame is not None and _in_convscope(frame):
        if (frame.f_globals.get("__name__"), frame.f_code.co_name) in _ENTRY_POINTS:
            entry = level
        frame, level = frame.f_back, level + 1
    return entry + 1 if entry else level
