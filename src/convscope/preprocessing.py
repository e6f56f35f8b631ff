"""Preprocessing a user can state: presets (``torch``, ``caffe``, ``tf``) and resize modes (``squash``,
``crop``, ``pad``), plus the geometry that maps model-input pixels back onto the photo they came from.

Presets follow the conventions pretrained models were trained with:

* ``torch``: pixels scaled to [0, 1], minus ImageNet mean ``(0.485, 0.456, 0.406)``, divided by
  std ``(0.229, 0.224, 0.225)`` (torchvision; Keras ``preprocess_input(mode="torch")``).
* ``caffe``: RGB → BGR, pixels kept in [0, 255], minus ``(103.939, 116.779, 123.68)`` in BGR order
  (Keras ``ResNet50``, ``VGG16``: ``preprocess_input(mode="caffe")``).
* ``tf``: pixels scaled to [-1, 1] as ``x / 127.5 − 1`` (Keras ``MobileNetV2``, ``InceptionV3``).

Resize modes, for an image whose size differs from the model's input size:

* ``squash`` (default): stretched to the input size, aspect ratio not kept.
* ``crop``: scaled so the short side fits (the input is covered), then the centre cut out.
* ``pad``: letterboxed — scaled to fit inside, centred, the rest filled with black (pixel value 0).

>>> Placement.of((100, 200), (50, 50), Resize.CROP).photo_box()
(50, 0, 150, 100)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from PIL import Image

from convscope.errors import OptionError, check_choice

try:
    _BILINEAR = Image.Resampling.BILINEAR
except AttributeError:  # Pillow < 9.1
    _BILINEAR = Image.BILINEAR  # type: ignore[attr-defined]

Box = tuple[int, int, int, int]  # (left, top, right, bottom), as PIL crops


class Preprocess(str, Enum):
    """A named preprocessing convention (see the module docstring)."""

    TORCH = "torch"
    CAFFE = "caffe"
    TF = "tf"


class Resize(str, Enum):
    """How an image is brought to the model's input size."""

    SQUASH = "squash"
    CROP = "crop"
    PAD = "pad"


@dataclass(frozen=True)
class Preset:
    """What a :class:`Preprocess` convention does to 0–255 pixels: ``(bgr(p) · scale − mean) / std``."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...] | None
    bgr: bool
    channels: int | None  # the channel count the preset is made for (None: any)


PRESETS: dict[Preprocess, Preset] = {
    Preprocess.TORCH: Preset(1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), bgr=False, channels=3),
    Preprocess.CAFFE: Preset(1.0, (103.939, 116.779, 123.68), None, bgr=True, channels=3),
    Preprocess.TF: Preset(1 / 127.5, (1.0,), None, bgr=False, channels=None),
}


def to_preprocess(value: object) -> Preprocess | None:
    """``None`` or a preset name (or :class:`Preprocess`) → the enum; anything else raises ``OptionError``."""
    if value is None or isinstance(value, Preprocess):
        return value
    return Preprocess(check_choice("preprocess", value, [p.value for p in Preprocess]))


def to_resize(value: object) -> Resize:
    """A resize mode name (or :class:`Resize`) → the enum; anything else raises ``OptionError``."""
    if isinstance(value, Resize):
        return value
    return Resize(check_choice("resize", value, [r.value for r in Resize]))


def check_preset(preset: Preprocess, given: Mapping[str, object]) -> Preset:
    """The preset's values; raises ``OptionError`` when ``given`` (scale/mean/std) sets one differently."""
    values = PRESETS[preset]
    own = {"scale": values.scale, "mean": values.mean, "std": values.std}
    clash = [name for name, v in given.items() if v is not None and v != own[name]]
    if clash:
        shown = ", ".join(f"{name}={own[name]!r}" for name in ("scale", "mean", "std"))
        raise OptionError(
            f"preprocess={preset.value!r} sets scale, mean and std itself ({shown}), so it cannot be combined "
            f"with your own {' and '.join(clash)}; give either the preset or your own scale/mean/std"
        )
    return values


@dataclass(frozen=True)
class Placement:
    """Where a photo of ``source`` = (h, w) lands in a model input of ``target`` = (H, W).

    The photo is resized to ``scaled`` = (h', w') and put at ``offset`` = (top, left) in the input;
    a negative offset (``crop``) means that much of the resized photo is cut off on that side.
    """

    source: tuple[int, int]
    target: tuple[int, int]
    scaled: tuple[int, int]
    offset: tuple[int, int]

    @classmethod
    def of(cls, source: tuple[int, int], target: tuple[int, int], resize: Resize | str) -> Placement:
        """The placement for ``resize`` mode (``squash``, ``crop`` or ``pad``)."""
        mode = to_resize(resize)
        (h, w), (th, tw) = source, target
        if min(h, w, th, tw) < 1:
            raise OptionError(f"image size {source} and input size {target} must both be positive")
        if mode is Resize.SQUASH or (h, w) == (th, tw):
            return cls(source, target, target, (0, 0))
        if mode is Resize.CROP:  # the odd pixel of an uneven margin goes to the bottom/right, as torchvision
            s = max(th / h, tw / w)
            scaled = (max(th, round(h * s)), max(tw, round(w * s)))
            return cls(source, target, scaled, (-((scaled[0] - th) // 2), -((scaled[1] - tw) // 2)))
        s = min(th / h, tw / w)
        scaled = (min(th, max(1, round(h * s))), min(tw, max(1, round(w * s))))
        return cls(source, target, scaled, ((th - scaled[0]) // 2, (tw - scaled[1]) // 2))

    def input_box(self) -> Box:
        """The model-input pixels that show the photo (``pad``: inside the padding; else the whole input)."""
        top, left = max(self.offset[0], 0), max(self.offset[1], 0)
        bottom = min(self.target[0], self.offset[0] + self.scaled[0])
        right = min(self.target[1], self.offset[1] + self.scaled[1])
        return left, top, right, bottom

    def photo_box(self) -> Box:
        """The photo pixels the model sees (``crop``: the centre region; else the whole photo)."""
        left, top, right, bottom = self.input_box()
        (h, w), (sh, sw) = self.source, self.scaled
        fy, fx = h / sh, w / sw
        oy, ox = self.offset
        x0, y0, x1, y1 = (left - ox) * fx, (top - oy) * fy, (right - ox) * fx, (bottom - oy) * fy
        return round(x0), round(y0), round(x1), round(y1)

    def fit(self, img: Image.Image) -> Image.Image:
        """``img`` (of size ``source``) resized, cropped or padded (black) to ``target`` (PIL bilinear)."""
        (sh, sw), (th, tw) = self.scaled, self.target
        if img.size != (sw, sh):
            img = img.resize((sw, sh), _BILINEAR)
        if (sh, sw) == (th, tw):
            return img
        top, left = self.offset
        if sh >= th and sw >= tw:  # crop
            return img.crop((-left, -top, -left + tw, -top + th))
        canvas = Image.new(img.mode, (tw, th), 0)
        canvas.paste(img, (left, top))
        return canvas


def display_pixels(
    a: np.ndarray,
    *,
    scale: float,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    bgr: bool = False,
) -> np.ndarray:
    """``(N, H, W, C)`` model-input values → ``(N, H, W, 3)`` uint8 pictures: ``(a · std + mean) / scale``,
    BGR → RGB when ``bgr``; a sample that then leaves [0, 255] by more than a rounding margin is min-max
    scaled instead. 1 channel is gray, 3 or 4 RGB, any other count the channel mean in gray. A ``mean`` or
    ``std`` whose length fits neither 1 nor C is not applied."""
    a = np.asarray(a, dtype=np.float64)
    c = a.shape[-1]
    if std is not None and len(std) in (1, c):
        a = a * np.asarray(std, dtype=np.float64)
    if mean is not None and len(mean) in (1, c):
        a = a + np.asarray(mean, dtype=np.float64)
    a = a / scale if scale else a
    if bgr and c == 3:
        a = a[..., ::-1]
    out = np.empty(a.shape[:3] + (3,), dtype=np.uint8)
    for i, sample in enumerate(a):
        pic = sample[..., :3] if 3 <= c <= 4 else sample.mean(axis=-1, keepdims=True)
        if pic.min() < -1.0 or pic.max() > 256.0:
            lo, hi = pic.min(), pic.max()
            pic = (pic - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(pic)
        out[i] = np.broadcast_to(np.clip(np.rint(pic), 0, 255), out.shape[1:])
    return out
