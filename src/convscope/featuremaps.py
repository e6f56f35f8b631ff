"""Result objects for activations and filters: plain data plus rendering shortcuts."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from convscope._warnings import user_stacklevel
from convscope.adapters.base import Layout
from convscope.errors import OptionError
from convscope.render.picture import Picture


@dataclass(frozen=True)
class FeatureMaps(Picture):
    """The output of one layer for a batch, as recorded in one forward pass.

    ``tensor`` is kept in the model's own layout: Keras (N, H, W, C), PyTorch (N, C, H, W).
    """

    name: str
    tensor: torch.Tensor
    layout: Layout

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def spatial(self) -> bool:
        return self.tensor.dim() == 4

    @property
    def is_vector(self) -> bool:
        """One value per channel: ``(N, C)``, or ``(N, C, 1, 1)`` / Keras ``(N, 1, 1, C)`` (Dense, pooled, logits)."""
        shape = self.shape
        if len(shape) == 2:
            return True
        spatial = shape[2:] if self.layout is Layout.NCHW else shape[1:3]
        return len(shape) == 4 and tuple(spatial) == (1, 1)

    @property
    def num_channels(self) -> int:
        if self.tensor.dim() < 2:
            return 1
        return int(self.tensor.shape[self.layout.channel_axis])

    def numpy(self) -> np.ndarray:
        """A copy in the model's own layout (Keras NHWC, PyTorch NCHW)."""
        return self.tensor.detach().cpu().numpy().copy()

    def channels_first(self) -> np.ndarray:
        """(N, C, H, W) float32 whatever the framework; a (N, D) output becomes D maps of 1×1."""
        a = self.tensor.detach().cpu().float().numpy()
        if a.ndim == 2:
            return a[:, :, None, None]
        if a.ndim == 3:  # (N, C, L) or (N, L, C): one row per channel
            a = a if self.layout is Layout.NCHW else a.transpose(0, 2, 1)
            return a[:, :, None, :]
        if a.ndim != 4:
            raise OptionError(f"layer {self.name!r} output has shape {a.shape}; only 2-D to 4-D outputs render")
        return a if self.layout is Layout.NCHW else a.transpose(0, 3, 1, 2)

    def _sample(self, index: int) -> np.ndarray:
        maps = self.channels_first()
        if not -len(maps) <= index < len(maps):
            raise OptionError(f"index={index} is out of range for a batch of {len(maps)}")
        return maps[index]

    def _where(self, index: int) -> str:
        return "for this input" if len(self.tensor) == 1 else f"for input {index}"

    def blank_notice(self, index: int = 0, normalize: Any = "channel") -> str | None:
        """What drawing sample ``index`` says out loud: an all-zero, constant or vanishing sample (with
        ``normalize="channel"``, flat channels too), else ``None``. :meth:`grid` warns it."""
        from convscope.render.blank import blank_message

        per_channel = not self.is_vector and str(getattr(normalize, "value", normalize)) == "channel"
        return blank_message(self.name, self._sample(index), kind="unit" if self.is_vector else "channel",
                             where=self._where(index), per_channel=per_channel)  # fmt: skip

    def grid(self, index: int = 0, **options: Any) -> Image.Image:
        """Every channel of sample ``index`` tiled into one image; a vector (:attr:`is_vector`) as a strip.

        Options go to :func:`convscope.render.grid_image` (``cols``, ``rows``, ``cmap``, ``normalize``,
        ``clip``, ``padding``, ``labels``, ``channels``, ``sort``, ``scale``); ``labels=True`` marks
        flat channels (``"5=0"``). A vector of units (Dense, global pooling, logits) renders with
        :func:`convscope.render.strip.strip_image` instead (same options; one coloured cell per unit, the
        value range in the title). An all-zero, constant or vanishing sample warns. Example::

            acts["conv_0"].grid(cols=8, cmap="viridis", normalize="layer")
            acts["fc"].grid(sort="max")     # "fc: 10 units, min -1.2 (unit 4) max 3.4 (unit 7)"
        """
        sample = self._sample(index)
        _check_channels(self.name, options.get("channels"), len(sample), "units" if self.is_vector else "channels")
        if self.is_vector:
            from convscope.render.strip import strip_image

            _warn(self.blank_notice(index))
            return strip_image(sample.reshape(-1), name=self.name, **options)
        from convscope.render import grid_image
        from convscope.render.blank import index_labels

        _warn(self.blank_notice(index, options.get("normalize", "channel")))
        if options.get("labels") is True:
            options["labels"] = index_labels(sample)
        return grid_image(sample, **options)

    def figure(self, index: int = 0, **options: Any) -> Any:
        """A matplotlib ``Figure`` of the grid with a title (needs matplotlib); a vector's strip as is."""
        if self.is_vector:
            from matplotlib.figure import Figure

            img = self.grid(index, **options)
            fig = Figure(figsize=(img.width / 100, img.height / 100), dpi=100)
            ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
            ax.imshow(np.asarray(img), interpolation="nearest")
            ax.set_axis_off()
            return fig
        from convscope.render import grid_figure

        _warn(self.blank_notice(index, options.get("normalize", "channel")))
        options.setdefault("titles", f"{self.name} · {self.num_channels} channels")
        return grid_figure(self._sample(index), **options)

    def __repr__(self) -> str:
        return f"FeatureMaps({self.name!r}, shape={self.shape}, layout={self.layout.value})"


def index_ranges(indices: Any) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``: indices as inclusive ranges, in the given order."""
    parts: list[list[int]] = []
    for i in (int(v) for v in indices):
        if parts and i == parts[-1][1] + 1:
            parts[-1][1] = i
        else:
            parts.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def _check_channels(name: str, channels: Any, count: int, kind: str) -> None:
    """Short message for indices past the layer's end: ``channels=0-99: layer 'stem' has 16 channels (0-15)``."""
    if channels is None or isinstance(channels, str) or not hasattr(channels, "__iter__"):
        return
    items = list(channels)
    if not all(isinstance(c, int | np.integer) and not isinstance(c, bool) for c in items):
        return  # the renderer names wrong types
    bad = [c for c in items if not 0 <= c < count]
    if bad:
        raise OptionError(f"channels={index_ranges(items)}: layer {name!r} has {count} {kind} (0-{count - 1}); "
                          f"out of range: {index_ranges(bad)}")  # fmt: skip


def _warn(message: str | None) -> None:
    if message is not None:
        warnings.warn(message, stacklevel=user_stacklevel())


class Activations(Mapping[str, FeatureMaps]):
    """Mapping layer name → :class:`FeatureMaps`, in the order the layers ran."""

    def __init__(self, maps: dict[str, FeatureMaps], output: Any = None) -> None:
        self._maps = maps
        self.output = output

    def __getitem__(self, key: str) -> FeatureMaps:
        try:
            return self._maps[key]
        except KeyError:
            from convscope.errors import LayerNotFoundError, hint

            near = hint(key, self._maps)
            raise LayerNotFoundError(
                f"no activations recorded for {key!r}; recorded: {', '.join(map(repr, self._maps)) or 'none'}"
                + (f" ({near})" if near else "")
            ) from None

    # Mapping's own ``in``/``get`` expect KeyError; ours raises LayerNotFoundError (a LookupError).
    def __contains__(self, key: object) -> bool:
        return key in self._maps

    def get(self, key: str, default: Any = None) -> Any:
        return self._maps.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._maps)

    def __len__(self) -> int:
        return len(self._maps)

    def __repr__(self) -> str:
        return "Activations(" + ", ".join(f"{k}: {v.shape}" for k, v in self._maps.items()) + ")"


@dataclass(frozen=True)
class Filters(Picture):
    """A conv layer's kernels in torch layout (out_channels, in_channels, kh, kw), plus bias."""

    name: str
    weights: np.ndarray
    bias: np.ndarray | None = None

    def numpy(self) -> np.ndarray:
        return self.weights.copy()

    def grid(self, **options: Any) -> Image.Image:
        """Kernels as one image; options go to :func:`convscope.render.filter_image`.

        ``mode="auto"`` shows RGB first-layer kernels as colour patches, deeper ones per input channel.
        """
        from convscope.render import filter_image

        return filter_image(self.weights, **options)

    def __repr__(self) -> str:
        return f"Filters({self.name!r}, shape={self.weights.shape})"
