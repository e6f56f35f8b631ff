"""``Attribution``: what ``scope.attribute`` returns — plain arrays plus rendering shortcuts.

Example::

    att = scope.attribute("cat.jpg", method="gradcam")
    att.raw.shape         # (1, 14, 14): the layer grid
    att.maps.shape        # (1, 224, 224): input grid, in [0, 1]
    att.overlay(alpha=0.4).save("cat_gradcam.png")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from convscope.errors import OptionError
from convscope.preprocessing import display_pixels
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
        resize: how the photos were brought to the input size (``"squash"``, ``"crop"`` or ``"pad"``);
            ``overlay(on=photo)`` uses it to lay the map back onto the photo.
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
    resize: str = "squash"

    def __len__(self) -> int:
        return len(self.maps)

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int) or not -len(self) <= index < len(self):
            raise OptionError(f"index={index!r} is out of range for a batch of {len(self)}")
        return index

    def overlay(
        self, index: int = 0, *, alpha: float = 0.5, cmap: str = "turbo", on: Any = None
    ) -> Image.Image:
        """Sample ``index``'s map blended over its input picture (RGB PIL image, input size).

        Defaults: ``index=0``, ``alpha=0.5`` (heatmap opacity), ``cmap="turbo"`` (any name in
        :data:`convscope.render.COLORMAPS`), ``on=None``. ``on`` = the original photo (path, PIL image
        or uint8 array) draws the map on it at the photo's own resolution, undoing the resize mode:
        ``squash`` stretches the map over the whole photo, ``crop`` covers only the centre region the
        model saw (the rest stays uncoloured), ``pad`` drops the padding first.

        Example: ``att.overlay(alpha=0.4, cmap="inferno")``; ``att.overlay(on="cat.jpg")``.
        """
        from convscope.render.overlay import overlay, overlay_on_photo

        i = self._check_index(index)
        if on is None:
            return overlay(self.images[i], self.maps[i], alpha=alpha, cmap=cmap)
        photo = _photo(on)
        self._warn_if_other_photo(i, photo, on)
        return overlay_on_photo(photo, self.maps[i], resize=self.resize, alpha=alpha, cmap=cmap)

    def _warn_if_other_photo(self, i: int, photo: np.ndarray, on: Any) -> None:
        """Warn when ``photo``, resized the way the inputs were, clearly differs from the picture the map
        was computed on (mean absolute difference above 10% of the range): the map belongs elsewhere."""
        import warnings

        from convscope._warnings import user_stacklevel
        from convscope.preprocessing import Placement

        seen = self.images[i]
        img = Image.fromarray(photo if photo.ndim == 2 or photo.shape[-1] in (1, 3) else photo[..., :3])
        fitted = Placement.of((img.height, img.width), seen.shape[:2], self.resize).fit(img.convert("RGB"))
        small = (min(32, seen.shape[1]), min(32, seen.shape[0]))  # thumbnails: blind to resampling detail
        a = np.asarray(fitted.resize(small, Image.Resampling.BOX), dtype=np.float32)
        b = np.asarray(Image.fromarray(seen).convert("RGB").resize(small, Image.Resampling.BOX), dtype=np.float32)
        gap = float(np.abs(a - b).mean()) / 255.0
        if gap > 0.10:
            name = repr(os.fspath(on)) if isinstance(on, (str, os.PathLike)) else "the photo"
            warnings.warn(f"{name} does not look like the image this map was computed on (mean difference "
                          f"{gap:.0%} after resizing it with resize={self.resize!r}); the overlay may show the "
                          "map on the wrong picture — pass the attributed image", stacklevel=user_stacklevel())  # fmt: skip

    def grid(
        self,
        *,
        cols: int | None = None,
        alpha: float = 0.5,
        cmap: str = "turbo",
        padding: int = 2,
        indices: Sequence[int] | None = None,
        on: Sequence[Any] | None = None,
    ) -> Image.Image:
        """Overlays of the batch (or ``indices``) tiled into one image.

        Defaults: ``cols=None`` (near-square), ``alpha=0.5``, ``cmap="turbo"``, ``padding=2``,
        ``on=None``; ``on`` = the original photos, one per tile, draws each map on its photo (see
        :meth:`overlay`; photos of different sizes are centred in equal cells).
        Example: ``att.grid(cols=8).save("batch.png")``; ``att.save("cams.png", on=["a.jpg", "b.jpg"])``.
        """
        from convscope.render.overlay import tile

        chosen = list(range(len(self)) if indices is None else [self._check_index(i) for i in indices])
        if on is not None and (isinstance(on, (str, Image.Image, np.ndarray)) or len(on) != len(chosen)):
            count = 1 if isinstance(on, (str, Image.Image, np.ndarray)) else len(on)
            raise OptionError(f"on= gives {count} photo(s) for {len(chosen)} map(s); pass one photo per map")
        photos = [None] * len(chosen) if on is None else list(on)
        tiles = [self.overlay(i, alpha=alpha, cmap=cmap, on=p) for i, p in zip(chosen, photos, strict=True)]
        return tile(tiles, cols=cols, padding=padding)

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
    bgr: bool = False,
) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 pictures of a model-input batch, undoing ``Scope``'s preprocessing.

    Values are mapped back with ``(x · std + mean) / scale`` (then BGR → RGB when ``bgr``); when that
    leaves [0, 255] by more than a rounding margin (float input prepared another way) each sample is
    min-max scaled instead. One channel is shown as gray, four as RGB, any other count as the channel
    mean in gray. ``Scope.input_spec().to_display(x)`` does the same with the scope's own settings.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 4:
        raise OptionError(f"overlays need image-like (4-D) inputs; received shape {a.shape}")
    a = a if channels_last else a.transpose(0, 2, 3, 1)
    return display_pixels(a, scale=scale, mean=mean, std=std, bgr=bgr)


def _photo(on: Any) -> np.ndarray:
    """The photo to draw on, as an HWC uint8 array (a path is read with its EXIF orientation)."""
    from convscope.inputs import load_image

    if isinstance(on, (str, os.PathLike)):
        on = load_image(on)
    if isinstance(on, Image.Image):
        return np.asarray(on.convert("RGB") if on.mode not in ("RGB", "L") else on)
    if isinstance(on, np.ndarray) and on.dtype == np.uint8:
        return on
    raise OptionError(
        f"on={type(on).__name__} is not a photo; pass an image path, a PIL image or a uint8 (H, W[, C]) array"
    )
