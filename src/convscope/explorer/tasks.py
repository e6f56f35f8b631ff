"""The two long jobs, as functions of (scope, report) for :class:`~convscope.explorer.jobs.JobRunner`:
``Scope.maximize`` (feature visualisation of one channel) and ``Scope.attribute`` (a map over the image)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from convscope.explorer.jobs import Work
from convscope.explorer.views import _enlarge, png


def maximize_work(layer: str, channel: int, steps: int) -> Work:
    def work(scope: Any, report: Callable[[float], None]) -> tuple[bytes, dict[str, Any]]:
        from convscope.optim import objectives

        def progress(step: int, total: int) -> None:  # 0.99 at most: the picture is still to be drawn
            report(0.99 * step / total)

        vis = scope.maximize(objectives.channel(layer.split("@")[0], channel), steps=steps, progress=progress)
        picture = _enlarge(Image.fromarray(vis.images[0].squeeze(-1) if vis.images.shape[-1] == 1 else vis.images[0]),
                           224)  # fmt: skip
        return png(picture), {"value": float(vis.values[0]), "steps": int(vis.meta.get("steps", steps)),
                              "recipe": str(vis.meta.get("recipe"))}  # fmt: skip

    return work


def attribute_work(picture: Image.Image, method: str, target: int | None) -> Work:
    def work(scope: Any, report: Callable[[float], None]) -> tuple[bytes, dict[str, Any]]:
        report(0.05)
        att = scope.attribute(picture, method=method, target=target)
        report(0.9)
        overlay = _enlarge(att.overlay(alpha=0.5), 224)
        return png(overlay), {"method": method, "target": None if att.targets is None else int(att.targets[0]),
                              "layer": att.layer}  # fmt: skip

    return work
