"""Turn what users pass (paths, PIL images, arrays, tensors) into one model-input batch.

Images (paths, PIL images, uint8 arrays) are converted to the model's channel count, resized to its input
size, scaled and normalised. Float arrays and tensors are taken as model input exactly as given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from convscope.adapters.base import Layout
from convscope.errors import InputError, OptionError, check_choice
from convscope.preprocessing import (
    Placement,
    Preprocess,
    Resize,
    check_preset,
    display_pixels,
    to_preprocess,
    to_resize,
)

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_ALLOWED = (
    "allowed: image paths (PNG/JPEG), PIL images, uint8 arrays or tensors shaped HW, HWC, CHW, NHWC or NCHW, "
    "float arrays or tensors in the model layout (one sample or a 4-D batch, or HW for 1-channel models), "
    "or a list/tuple of these"
)

ImageLike: TypeAlias = "str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor"
InputLike: TypeAlias = "ImageLike | Sequence[ImageLike]"


@dataclass(frozen=True)
class InputSpec:
    """What a model takes as input.

    ``layout`` may be given as a string (``"NCHW"``/``"NHWC"``, any case); ``channels`` and ``size`` (H, W)
    are ``None`` when unknown. Images (0–255 pixels ``p``) become ``(bgr(p) · scale − mean) / std``:
    ``scale`` defaults to ``1/255``; ``mean``/``std`` (default ``None``: not applied) are per channel, in
    the model's channel order; ``bgr`` (default ``False``) reverses RGB to BGR. ``preprocess`` (``"torch"``,
    ``"caffe"`` or ``"tf"``, see :mod:`convscope.preprocessing`; default ``None``) sets scale, mean, std and
    bgr at once and cannot be combined with different values of them. ``resize`` (``"squash"`` (default),
    ``"crop"`` or ``"pad"``) says how an image of another size is brought to ``size``. ``dtype`` defaults
    to ``torch.float32``.

    >>> InputSpec("NHWC", channels=1, size=(28, 28)).expected_shape()
    '(N, 28, 28, 1)'
    >>> InputSpec("NCHW", preprocess="caffe").mean
    (103.939, 116.779, 123.68)
    """

    layout: Layout
    channels: int | None = None
    size: tuple[int, int] | None = None
    scale: float = None  # type: ignore[assignment]  # None means 1/255 (or the preset's)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dtype: torch.dtype = torch.float32
    preprocess: Preprocess | None = None
    resize: Resize = Resize.SQUASH
    bgr: bool = False

    def __post_init__(self) -> None:
        self._resolve_preset()
        layout = self.layout.upper() if isinstance(self.layout, str) else self.layout
        object.__setattr__(self, "layout", Layout(check_choice("layout", layout, [m.value for m in Layout])))
        if self.channels is not None and (not _is_int(self.channels) or self.channels < 1):
            raise OptionError(f"channels={self.channels!r} is not allowed; pass a positive int or None")
        if self.size is not None:
            if len(self.size) != 2 or not all(_is_int(v) and v >= 1 for v in self.size):
                raise OptionError(f"size={self.size!r} is not allowed; pass (height, width) as positive ints")
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        for name in ("mean", "std"):
            object.__setattr__(self, name, self._per_channel(name, getattr(self, name)))
        if self.std is not None and 0.0 in self.std:
            raise OptionError(f"std={self.std!r} contains 0; every value must be non-zero")
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise OptionError(f"dtype={self.dtype!r} is not allowed; pass a floating torch dtype")
        object.__setattr__(self, "scale", float(self.scale))
        if not isinstance(self.bgr, (bool, np.bool_)):
            raise OptionError(f"bgr={self.bgr!r} is not allowed; pass True or False")

    def _resolve_preset(self) -> None:
        """Validate ``preprocess``/``resize``; a preset fills in scale, mean, std and bgr."""
        preset = to_preprocess(self.preprocess)
        object.__setattr__(self, "preprocess", preset)
        object.__setattr__(self, "resize", to_resize(self.resize))
        if preset is None:
            if self.scale is None:
                object.__setattr__(self, "scale", 1 / 255)
            return
        given = {
            "scale": self.scale,
            "mean": self._per_channel("mean", self.mean),
            "std": self._per_channel("std", self.std),
        }
        values = check_preset(preset, given)
        if values.channels is not None and self.channels not in (None, values.channels):
            raise OptionError(
                f"preprocess={preset.value!r} is made for {values.channels}-channel (RGB) input, but this "
                f"model takes {self.channels} channel(s); give your own scale/mean/std instead"
            )
        for name in ("scale", "mean", "std", "bgr"):
            object.__setattr__(self, name, getattr(values, name) or getattr(self, name))

    def _per_channel(self, name: str, value: Sequence[float] | None) -> tuple[float, ...] | None:
        if value is None:
            return None
        values = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
        if not values or (self.channels is not None and len(values) not in (1, self.channels)):
            allowed = "1 value" + (
                f" or {self.channels} (one per channel)" if self.channels else " or one per channel"
            )
            raise OptionError(f"{name}={value!r} has {len(values)} values; pass {allowed}")
        return values

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float pixels on the 0–255 scale (RGB order) → model input in ``layout``.

        Applies ``bgr``, ``scale``, ``mean`` and ``std`` (keeps the autograd graph; for images in [0, 1]
        pass ``255 * images``). :meth:`to_display` inverts it.
        """
        x = pixels.flip(1) if self.bgr and pixels.shape[1] == 3 else pixels
        x = x * self.scale if self.scale != 1.0 else x
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, x.shape[1]):
                raise OptionError(
                    f"{name}={values!r} has {len(values)} values but the images have {x.shape[1]} "
                    "channels; pass 1 value or one per channel"
                )
        if self.mean is not None:
            x = x - torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        if self.std is not None:
            x = x / torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x.permute(0, 2, 3, 1) if self.layout is Layout.NHWC else x

    def to_display(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 pictures of a model-input batch, inverting :meth:`normalise`.

        Values are mapped back with ``(x · std + mean) / scale`` and BGR → RGB; when that leaves
        [0, 255] by more than a rounding margin (float input prepared another way) each sample is
        min-max scaled instead. One channel is shown as gray, 3 or 4 as RGB, any other count as the
        channel mean in gray.

        >>> spec = InputSpec("NHWC", preprocess="caffe")
        >>> spec.to_display(spec.normalise(torch.tensor([[[[10.0]], [[20.0]], [[30.0]]]])))[0, 0, 0].tolist()
        [10, 20, 30]
        """
        t = x.detach().cpu() if isinstance(x, torch.Tensor) else x
        a = np.asarray(t, dtype=np.float64)
        if a.ndim != 4:
            raise OptionError(f"pictures need image-like (4-D) inputs; received shape {a.shape}")
        a = a if self.layout is Layout.NHWC else a.transpose(0, 2, 3, 1)
        return display_pixels(a, scale=self.scale, mean=self.mean, std=self.std, bgr=self.bgr)

    def placement(self, source: tuple[int, int]) -> Placement:
        """Where an image of ``source`` = (h, w) lands in this input (``size``, ``resize``).

        >>> InputSpec("NCHW", size=(50, 50), resize="pad").placement((100, 200)).input_box()
        (0, 12, 50, 37)
        """
        return Placement.of(source, self.size or source, self.resize)

    def expected_shape(self) -> str:
        """The batch shape the model expects, ``'?'`` for unknowns, e.g. ``"(N, 3, 224, 224)"``."""
        c = "?" if self.channels is None else str(self.channels)
        h, w = ("?", "?") if self.size is None else (str(self.size[0]), str(self.size[1]))
        dims = (c, h, w) if self.layout is Layout.NCHW else (h, w, c)
        return "(N, " + ", ".join(dims) + ")"


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Read an image file (PNG, JPEG, ...) fully into memory, applying its EXIF orientation.

    >>> load_image("cat.jpg").size  # doctest: +SKIP
    (640, 480)
    """
    try:
        is_file = Path(path).is_file()
    except (OSError, ValueError):
        is_file = False
    if not is_file:
        raise InputError(f"image path {os.fspath(path)!r} does not exist or is not a file; {_ALLOWED}")
    try:
        with Image.open(path) as img:
            img.load()
            turned = ImageOps.exif_transpose(img)
            return turned if turned is not None else img.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"could not read image {os.fspath(path)!r}: {exc}") from exc


def prepare(inputs: InputLike, spec: InputSpec, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Turn ``inputs`` into one batch in ``spec.layout``, on ``device``.

    Images are converted to ``spec.channels``, brought to ``spec.size`` by ``spec.resize`` (PIL bilinear;
    ``squash``, ``crop`` or ``pad``), then normalised by :meth:`InputSpec.normalise`. Float arrays/tensors are model input
    as given (4-D batch, 3-D sample, or HW for 1-channel models): only cast to ``spec.dtype`` and copied.
    ``device=None`` keeps a tensor's device (CPU for everything else). The caller's data is never modified;
    the result is a new tensor detached from any autograd graph.

    >>> spec = InputSpec("NCHW", channels=3, size=(2, 2))
    >>> prepare(np.full((2, 2, 3), 255, np.uint8), spec).shape
    torch.Size([1, 3, 2, 2])
    """
    items = _collect(inputs, spec)
    tensors = [i for i in items if isinstance(i, torch.Tensor)]
    target = (
        torch.device(device) if device is not None else tensors[0].device if tensors else torch.device("cpu")
    )
    images = [i for i in items if isinstance(i, np.ndarray)]
    pixels = _images_to_tensor(_fit_all(images, spec), spec, target) if images else torch.empty(0)
    if not tensors:
        return pixels
    rows = iter(pixels)
    parts = [i.to(target) if isinstance(i, torch.Tensor) else next(rows)[None] for i in items]
    if len({tuple(p.shape[1:]) for p in parts}) > 1:
        shapes = ", ".join(str(tuple(p.shape)) for p in parts)
        raise InputError(
            f"the inputs give samples of different shapes ({shapes}); the model expects "
            f"{spec.expected_shape()} for every one"
        )
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _collect(inputs: object, spec: InputSpec) -> list[np.ndarray | torch.Tensor]:
    """Flatten ``inputs`` into HWC uint8 images (arrays) and owned 4-D model-layout batches (tensors)."""
    if not isinstance(inputs, (list, tuple)):
        return list(_collect_one(inputs, spec, "inputs"))
    if not inputs:
        raise InputError(f"received an empty {type(inputs).__name__}; {_ALLOWED}")
    items: list[np.ndarray | torch.Tensor] = []
    for i, item in enumerate(inputs):
        if isinstance(item, (list, tuple)):
            raise InputError(f"inputs[{i}] is a nested {type(item).__name__}; pass one flat list. {_ALLOWED}")
        items.extend(_collect_one(item, spec, f"inputs[{i}]"))
    return items


def _collect_one(item: object, spec: InputSpec, where: str) -> Sequence[np.ndarray | torch.Tensor]:
    if isinstance(item, (str, os.PathLike)):
        path = repr(os.fspath(item))  # messages name the file
        return [_pil_to_array(load_image(item), path if where == "inputs" else f"{where} ({path})")]
    if isinstance(item, Image.Image):
        return [_pil_to_array(item, where)]
    if isinstance(item, torch.Tensor):
        if item.dtype == torch.uint8:
            return _uint8_images(item.detach().cpu().numpy(), where, spec.channels)
        if item.is_floating_point():
            return [_model_batch(item.detach().to(dtype=spec.dtype, copy=True), spec, where, "tensor")]
        raise InputError(
            f"{where} is a tensor of dtype {item.dtype}; pass uint8 images or floating tensors. {_ALLOWED}"
        )
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint8:
            return _uint8_images(item, where, spec.channels)
        if np.issubdtype(item.dtype, np.floating):
            return [_model_batch(_numpy_to_tensor(item, spec.dtype), spec, where, "array")]
        raise InputError(
            f"{where} is an array of dtype {item.dtype}; pass uint8 images (x.astype(np.uint8)) "
            f"or float model input (x.astype(np.float32)). {_ALLOWED}"
        )
    raise InputError(f"{where} has type {type(item).__name__}, which convscope cannot read; {_ALLOWED}")


def _numpy_to_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A new tensor with ``array``'s values cast to ``dtype`` (the caller's array is only read)."""
    native = (
        array.dtype.newbyteorder("=") if array.dtype in (np.float16, np.float32, np.float64) else np.float64
    )
    return torch.from_numpy(np.array(array, dtype=native, order="C", copy=True)).to(dtype=dtype)


def _model_batch(x: torch.Tensor, spec: InputSpec, where: str, kind: str) -> torch.Tensor:
    """Add the batch (and for HW data, channel) axes to model input and check it against ``spec``."""
    ndim, given = x.ndim, tuple(x.shape)
    if ndim == 2:
        if spec.channels not in (None, 1):
            raise InputError(
                f"{where} is a 2-D float {kind} of shape {tuple(x.shape)}, which only fits 1-channel "
                f"models; this model expects {spec.expected_shape()}"
            )
        x = x[None, None] if spec.layout is Layout.NCHW else x[None, :, :, None]
    elif ndim == 3:
        x = x[None]
    elif ndim != 4:
        raise InputError(
            f"{where} is a {ndim}-D float {kind} of shape {tuple(x.shape)}; allowed: a 4-D batch "
            f"{spec.expected_shape()}, one 3-D sample, or HW for 1-channel models"
        )
    if x.shape[0] == 0 or 0 in x.shape:
        raise InputError(f"{where} is an empty {kind} of shape {tuple(x.shape)}; pass at least one sample")
    if not _fits(tuple(x.shape), spec, spec.layout):
        raise InputError(_layout_message(tuple(x.shape), given, spec, where, kind))
    return x


def _fits(shape: tuple[int, ...], spec: InputSpec, layout: Layout) -> bool:
    c, hw = (shape[1], shape[2:4]) if layout is Layout.NCHW else (shape[3], shape[1:3])
    return (spec.channels is None or c == spec.channels) and (spec.size is None or hw == spec.size)


def _layout_message(
    shape: tuple[int, ...], given: tuple[int, ...], spec: InputSpec, where: str, kind: str
) -> str:
    """``shape`` is the batched input, ``given`` what the user passed."""
    ndim = len(given)
    msg = f"{where}: got a float {kind} of shape {given} but this model expects {spec.expected_shape()}"
    other = Layout.NHWC if spec.layout is Layout.NCHW else Layout.NCHW
    if ndim == 2 or not _fits(shape, spec, other):
        return msg + f" ({spec.layout.value}); float input is used exactly as given, so reshape or resize it"
    perm4 = (0, 3, 1, 2) if spec.layout is Layout.NCHW else (0, 2, 3, 1)
    perm = perm4 if ndim == 4 else tuple(p - 1 for p in perm4[1:])
    call = f"x.permute{perm}" if kind == "tensor" else f"x.transpose{perm}"
    return (
        f"{where}: got {given}-like {other.value[4 - ndim :]} data "
        f"but this {spec.layout.value} model expects "
        f"{spec.expected_shape()}; transpose with {call}"
    )


def _uint8_images(array: np.ndarray, where: str, channels: int | None = None) -> list[np.ndarray]:
    """Split a uint8 array into HWC images (views; nothing is written).

    For a 1-channel model a 3-D ``(N, H, W)`` array whose last axis is not a channel count is a batch
    of gray images (so three digits are never read as one RGB picture).
    """
    if 0 in array.shape:
        raise InputError(f"{where} is an empty uint8 array of shape {array.shape}; pass at least one image")
    if array.ndim == 2:
        return [array[:, :, None]]
    if array.ndim == 3 and channels == 1 and array.shape[-1] not in (1, 3, 4):
        return [a[:, :, None] for a in array]
    if array.ndim == 3:
        if array.shape[-1] in (1, 3, 4):
            return [array]
        if array.shape[0] in (1, 3):
            return [array.transpose(1, 2, 0)]
    if array.ndim == 4:
        if array.shape[-1] in (1, 3, 4):
            return list(array)
        if array.shape[1] in (1, 3):
            return list(array.transpose(0, 2, 3, 1))
    raise InputError(
        f"{where} is a uint8 array of shape {array.shape}; allowed uint8 images: HW, HWC (C in 1, 3, 4), "
        "CHW (C in 1, 3) or 4-D NHWC/NCHW batches"
    )


def _pil_to_array(img: Image.Image, where: str) -> np.ndarray:
    """An HWC uint8 array with 1, 3 or 4 channels (alpha kept for now, palette and CMYK resolved)."""
    if img.mode.startswith(("I", "F")):
        raise InputError(
            f"{where} is a {img.mode!r}-mode (16-bit or float) image; convert it to 8 bits, "
            "or pass a float array scaled the way the model expects"
        )
    if img.mode not in _MODES.values():
        if img.mode in ("1", "LA", "La"):
            img = img.convert("L")
        else:
            img = img.convert("RGBA" if img.mode in ("PA", "RGBa") or "transparency" in img.info else "RGB")
    array = np.asarray(img)
    return array[:, :, None] if array.ndim == 2 else array


def _fit_all(images: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Stack the images as an NHWC uint8 batch with the model's channel count and size."""
    channels = spec.channels or (3 if any(img.shape[2] > 1 for img in images) else 1)
    if channels not in _MODES:
        raise InputError(
            f"this model expects {channels}-channel input {spec.expected_shape()}, but images give "
            "1 (gray), 3 (RGB) or 4 (RGBA) channels; pass a float array in the model layout instead"
        )
    size = spec.size
    if size is None:
        sizes = sorted({(img.shape[0], img.shape[1]) for img in images})
        if len(sizes) > 1:
            raise InputError(
                f"the images have different sizes (H, W) {sizes} and the model input size is "
                "unknown; resize them to one size or give the spec a size"
            )
        size = sizes[0]
    return np.stack([_fit(img, channels, size, spec.resize) for img in images])


def _fit(img: np.ndarray, channels: int, size: tuple[int, int], resize: Resize = Resize.SQUASH) -> np.ndarray:
    """One HWC uint8 image converted to ``channels`` and brought to ``size`` by ``resize``."""
    if img.shape[2] == channels and img.shape[:2] == size:
        return img
    pil = Image.fromarray(np.ascontiguousarray(img[:, :, 0] if img.shape[2] == 1 else img))
    if pil.mode != _MODES[channels]:
        pil = pil.convert(_MODES[channels])  # RGBA -> RGB drops alpha; RGB -> L is ITU-R 601 luma
    if pil.size != (size[1], size[0]):
        pil = Placement.of((pil.height, pil.width), size, resize).fit(pil)
    array = np.asarray(pil)
    return array[:, :, None] if array.ndim == 2 else array


def _images_to_tensor(batch: np.ndarray, spec: InputSpec, device: torch.device) -> torch.Tensor:
    """Scale and normalise an NHWC uint8 batch, then lay it out as the model wants."""
    pixels = torch.from_numpy(batch).to(device=device).to(dtype=spec.dtype).permute(0, 3, 1, 2)
    return spec.normalise(pixels).contiguous()


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
