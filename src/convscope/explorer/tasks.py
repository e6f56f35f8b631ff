"""The two long jobs, as functions of (scope, report) for :class:`~convscope.explorer.jobs.JobRunner`:
``Scope.maximize`` (feature visualisation of one channel) and ``Scope.attribute`` (a map over the image)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from PIL import Image

from convscope.explorer.jobs import Work
from convscope.explorer.views import _enlarge, png


@contextlib.contextmanager
def _step_counter(report: Callable[[float], None]) -> Iterator[None]:
    """While inside, ``maximize``'s progress bar reports each optimiser step to ``report`` (jobs run one at a
    time, so swapping the module's bar class is safe; a ``progress=callable`` hook would be cleaner)."""
    import convscope.optim.optimize as optimize

    class Bar:
        def __init__(self, total: int = 0, **_: Any) -> None:
            self.total, self.n = max(int(total or 1), 1), 0

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, n: int = 1) -> None:
            self.n += n
            report(0.99 * self.n / self.total)

        def set_postfix(self, *args: Any, **kwargs: Any) -> None:
            return None

    original = optimize.tqdm
    optimize.tqdm = Bar  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        optimize.tqdm = original  # type: ignore[misc]


def maximize_work(layer: str, channel: int, steps: int) -> Work:
    def work(scope: Any, report: Callable[[float], None]) -> tuple[bytes, dict[str, Any]]:
        from convscope.optim import objectives

        with _step_counter(report):
            vis = scope.maximize(objectives.channel(layer.split("@")[0], channel), steps=steps, progress=None)
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
