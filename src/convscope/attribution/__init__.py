"""Attribution: which input pixels (or layer positions) drive a class score, and how faithfully.

Methods come from a registry (:func:`methods`); each is one small class (see :mod:`.base`).
Gradient family: ``saliency``, ``gradient_x_input``, ``smoothgrad``, ``smoothgrad_sq``, ``vargrad``,
``integrated_gradients``, ``guided_backprop``, ``deconvnet``. CAM family: ``gradcam``, ``gradcam++``,
``hirescam``, ``xgradcam``, ``layercam``, ``scorecam``, ``eigencam``, ``guided_gradcam``.
Perturbation: ``occlusion``. Faithfulness: :mod:`.metrics` (deletion/insertion) and
``Scope.sanity_check`` (:mod:`.sanity`).

Example::

    import convscope as cs
    import convscope.attribution
    cs.attribution.methods()                      # ('saliency', 'gradient_x_input', ...)
    att = cs.Scope(model).attribute(x, method="gradcam", target=3)
    att.overlay().save("gradcam.png")
"""

from __future__ import annotations

from convscope.attribution.base import Grid, Method, Raw, Reduce, get_method, methods
from convscope.attribution.result import Attribution

__all__ = ["Attribution", "Grid", "Method", "Raw", "Reduce", "get_method", "methods"]
