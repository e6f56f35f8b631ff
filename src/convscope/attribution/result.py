"""``Attribution``: what ``scope.attribute`` returns — plain arrays plus rendering shortcuts.

Example::

    att = scope.attribute("cat.jpg", method="gradcam")
    att.raw.shape         # (1, 14, 14): the layer grid
    att.maps.shape        # (1, 224, 224): input grid, in [0, 1]
    att.overlay(alpha=0.4).save("cat_gradcam.png")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from convscope.errors import OptionError
from convscope.render.picture import Picture


@dataclass(frozen=True, eq=False)
class Attribution(Picture):
    """Attribution maps for a batch.

    Attributes:
        method: registry name of the method.
        raw: native-resolution values — the input's shape and layout for gradient methods (signed),
            ``(N, h, w)`` on the layer grid for CAMs, ``(N, H, W)`` for occlusion.
        maps: ``(N, H, W)`` float32 at input resolution in [0, 1]: channels reduced (``reduce``
            option), CAMs upsampled bilinearly, then divided by the per-sample maximum (min-max
            when the map is signed, e.g. ``relu=False``). An all-zero map stays zero.
        targets: the class index explained per sample (``None`` for a callable target).
        layer: the layer a CAM method used (``None`` otherwise).
        images: ``(N, H, W, 3)`` uint8 pictures of the inputs, for overlays.
        inputs: the model-input batch that was explained (model layout, float32).
        delta: Integrated Gradients' completeness error per sample, ``Σ raw − (f(x) − f(x'))``.
        options: the method options in effect.
        target_fn: the callable target, when one was given (``targets`` is then ``None``);
            :func:`convscope.metrics.deletion` and ``insertion`` score with it. Not shown in the repr.
    """

    method: str
    raw: np.ndarray
    maps: np.ndarray
    targets: tuple[int, ...] | None
    layer: str | None
    images: np.ndarray
    inputs: np.ndarray
    delta: np.ndarray | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    target_fn: Callable[[Any], Any] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.maps)

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int) or not -len(self) <= index < len(self):
            raise OptionError(f"index={index!r} is out of range for a batch of {len(self)}")
        return index

    def overlay(self, index: int = 0, *, alpha: float = 0.5, cmap: str = "turbo") -> Image.Image:
        """Sample ``index``'s map blended over its input picture (RGB PIL image, input size).

        Defaults: ``index=0``, ``alpha=0.5`` (heatmap opacity), ``cmap="turbo"`` (any name in
        :data:`convscope.render.COLORMAPS`). Example: ``att.overlay(alpha=0.4, cmap="inferno")``.
        """
        from convscope.render.overlay import overlay

        i = self._check_index(index)
        return overlay(self.images[i], self.maps[i], alpha=alpha, cmap=cmap)

    def grid(
        self,
        *,
        cols: int | None = None,
        alpha: float = 0.5,
        cmap: str = "turbo",
        padding: int = 2,
        indices: Sequence[int] | None = None,
    ) -> Image.Image:
        """Overlays of the batch (or ``indices``) tiled into one image.

        Defaults: ``cols=None`` (near-square), ``alpha=0.5``, ``cmap="turbo"``, ``padding=2``.
        Example: ``att.grid(cols=8).save("batch.png")``.
        """
        from convscope.render.overlay import tile

        chosen = range(len(self)) if indices is None else [self._check_index(i) for i in indices]
        return tile([self.overlay(i, alpha=alpha, cmap=cmap) for i in chosen], cols=cols, padding=padding)

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}", f"maps={tuple(self.maps.shape)}", f"raw={tuple(self.raw.shape)}"]
        if self.layer is not None:
            parts.append(f"layer={self.layer!r}")
        parts.append(f"targets={list(self.targets) if self.targets is not None else 'callable'}")
        return f"Attribution({', '.join(parts)})"


def display_images(
    x: np.ndarray,
    *,
    channels_last: bool,
    scale: float,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 pictures of a model-input batch, undoing ``Scope``'s preprocessing.

    Values are mapped back with ``(x · std + mean) / scale``; when that leaves [0, 255] by more than a
    rounding margin (float input prepared another way) each sample is min-max scaled instead.
    One channel is shown as gray, four as RGB, any other count as the channel mean in gray.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 4:
        raise OptionError(f"overlays need image-like (4-D) inputs; received shape {a.shape}")
    a = a if channels_last else a.transpose(0, 2, 3, 1)
    c = a.shape[-1]
    if std is not None and len(std) in (1, c):
        a = a * np.asarray(std, dtype=np.float64)
    if mean is not None and len(mean) in (1, c):
        a = a + np.asarray(mean, dtype=np.float64)
    a = a / scale if scale else a
    out = np.empty(a.shape[:3] + (3,), dtype=np.uint8)
    for i, sample in enumerate(a):
        pic = sample[..., :3] if c >= 3 and c <= 4 else sample.mean(axis=-1, keepdims=True)
        if pic.min() < -1.0 or pic.max() > 256.0:
            lo, hi = pic.min(), pic.max()
            pic = (pic - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(pic)
        out[i] = np.broadcast_to(np.clip(np.rint(pic), 0, 255), out.shape[1:])
    return out
