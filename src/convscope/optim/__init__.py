"""Activation maximisation: synthesise what a channel, neuron, layer or class responds to.

Objectives say what to maximise (:mod:`convscope.optim.objectives`), parameterisations how the image is
represented (:mod:`~convscope.optim.params`), transforms and regularisers what keeps it natural
(:mod:`~convscope.optim.transforms`, :mod:`~convscope.optim.regularizers`), recipes bundle sensible
choices (:mod:`~convscope.optim.recipes`), and :func:`maximize` runs the loop.

Example::

    import convscope as cs
    from convscope.optim import total_variation
    vis = scope.maximize(cs.objectives.channel("conv_1", range(16)), steps=128)
    vis = scope.maximize(cs.objectives.logit(3), regularizers=[total_variation(0.1)], recipe="plain")
    vis.grid().save("gallery.png")
"""

from __future__ import annotations

from convscope.optim import objectives
from convscope.optim.objectives import OBJECTIVES, Objective
from convscope.optim.optimize import channel_count, maximize, maximize_layer
from convscope.optim.params import ImageParam, make_param
from convscope.optim.recipes import RECIPES, Recipe
from convscope.optim.regularizers import REGULARIZERS, Regularizer, blur, l1, l2, total_variation
from convscope.optim.transforms import (
    Transform,
    apply_transforms,
    compose,
    jitter,
    pad,
    random_rotate,
    random_scale,
    standard_transforms,
)
from convscope.optim.visualization import Visualization

__all__ = [
    "OBJECTIVES",
    "RECIPES",
    "REGULARIZERS",
    "ImageParam",
    "Objective",
    "Recipe",
    "Regularizer",
    "Transform",
    "Visualization",
    "apply_transforms",
    "blur",
    "channel_count",
    "compose",
    "jitter",
    "l1",
    "l2",
    "make_param",
    "maximize",
    "maximize_layer",
    "objectives",
    "pad",
    "random_rotate",
    "random_scale",
    "standard_transforms",
    "total_variation",
]
