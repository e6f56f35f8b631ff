"""Image parameterisations: the tensors the optimiser changes, and how they become an image in [0, 1].

* ``pixel``: one value per pixel and channel (Erhan et al. 2009's gradient ascent on pixels).
* ``fft``: a Fourier spectrum scaled by ``1 / frequency``, so low frequencies move first (Lucid).

Either can be colour-decorrelated (3-channel models: Lucid's ImageNet colour basis; other channel counts:
identity unless you pass a matrix) and squashed into [0, 1] with a sigmoid, or clamped (the plain recipe, and the default one under 64 px).

Example::

    p = make_param("fft", n=4, channels=3, size=(128, 128), decorrelate=True, generator=torch.Generator())
    img = p()            # (4, 3, 128, 128) in [0, 1], differentiable w.r.t. p.parameters()
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from convscope.errors import OptionError, check_choice

# Lucid's square root of the ImageNet colour correlation, columns normalised to the largest norm.
_COLOR_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_DECORRELATION = _COLOR_SVD_SQRT / np.max(np.linalg.norm(_COLOR_SVD_SQRT, axis=0))
_FFT_SCALE = 4.0  # Lucid's constant: keeps the initial fft image from saturating the sigmoid


class ParamKind(str, Enum):
    """Built-in parameterisations: ``ParamKind("pixel")`` or ``ParamKind("fft")``."""

    PIXEL = "pixel"
    FFT = "fft"


class Squash(str, Enum):
    """How raw values become [0, 1]: ``"sigmoid"`` (smooth) or ``"clamp"`` (projected ascent)."""

    SIGMOID = "sigmoid"
    CLAMP = "clamp"


@runtime_checkable
class ImageParam(Protocol):
    """What the optimiser needs from a parameterisation."""

    def parameters(self) -> list[torch.Tensor]:
        """Leaf tensors to optimise."""

    def __call__(self) -> torch.Tensor:
        """The current images, (N, C, H, W) in [0, 1]."""

    def project(self) -> None:
        """Called after every optimiser step (e.g. clamp pixels back into range)."""


ParamFactory = Callable[..., ImageParam]


def colour_matrix(decorrelate: bool | np.ndarray | torch.Tensor, channels: int) -> torch.Tensor | None:
    """The (C, C) matrix mixing decorrelated raw channels into colour channels, or ``None`` (identity).

    ``True`` gives Lucid's ImageNet basis for 3 channels and the identity otherwise; ``False`` the identity;
    an array is used as given (it must be (C, C)).
    """
    if isinstance(decorrelate, bool):
        return torch.from_numpy(COLOR_DECORRELATION.copy()) if decorrelate and channels == 3 else None
    m = torch.as_tensor(np.asarray(decorrelate, dtype=np.float32))
    if m.shape != (channels, channels):
        raise OptionError(f"decorrelate: a colour matrix must be ({channels}, {channels}) for this "
                          f"{channels}-channel model; received shape {tuple(m.shape)}")  # fmt: skip
    return m


def _fft_freqs(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


class _Image:
    """Shared tail of both parameterisations: colour mixing, then squashing into [0, 1]."""

    def __init__(self, tensor: torch.Tensor, colour: torch.Tensor | None, squash: Squash) -> None:
        self.tensor = tensor.requires_grad_(True)
        self.colour = None if colour is None else colour.to(tensor.device)
        self.squash = squash

    def parameters(self) -> list[torch.Tensor]:
        return [self.tensor]

    def raw(self) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self) -> torch.Tensor:
        t = self.raw()
        if self.colour is not None:
            t = torch.einsum("dc,nchw->ndhw", self.colour, t)
        if self.squash is Squash.SIGMOID:
            return torch.sigmoid(t)
        return (t if self.colour is None else t + 0.5).clamp(0.0, 1.0)

    def project(self) -> None:
        return None


class PixelImage(_Image):
    """One free value per pixel. With ``clamp`` squashing it starts as grey noise and is clamped after each
    step (projected gradient ascent); with ``sigmoid`` it starts near 0.5 grey."""

    def __init__(self, n: int, channels: int, size: tuple[int, int], *, colour: torch.Tensor | None,
                 squash: Squash, generator: torch.Generator, device: torch.device, sd: float = 0.01) -> None:  # fmt: skip
        if squash is Squash.CLAMP and colour is None:  # grey noise in [0.4, 0.6]
            tensor = 0.4 + 0.2 * torch.rand((n, channels, *size), generator=generator)
        else:
            tensor = torch.randn((n, channels, *size), generator=generator) * sd
        super().__init__(tensor.to(device), colour, squash)

    def raw(self) -> torch.Tensor:
        return self.tensor

    def project(self) -> None:
        if self.squash is Squash.CLAMP and self.colour is None:
            with torch.no_grad():
                self.tensor.clamp_(0.0, 1.0)


class FourierImage(_Image):
    """A real spectrum per channel, scaled by ``1 / max(f, 1 / max(H, W)) ** decay``, inverted with irfft2."""

    def __init__(self, n: int, channels: int, size: tuple[int, int], *, colour: torch.Tensor | None,
                 squash: Squash, generator: torch.Generator, device: torch.device, sd: float = 0.01,
                 decay: float = 1.0) -> None:  # fmt: skip
        h, w = size
        freqs = _fft_freqs(h, w)
        spectrum = torch.randn((n, channels, *freqs.shape, 2), generator=generator) * sd
        scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** decay
        self.scale = torch.from_numpy(scale.astype(np.float32))[None, None, :, :, None].to(device)
        self.size = size
        super().__init__(spectrum.to(device), colour, squash)

    def raw(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.scale * self.tensor)
        return torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / _FFT_SCALE


def make_param(
    param: str | ParamKind | ParamFactory,
    *,
    n: int,
    channels: int,
    size: tuple[int, int],
    decorrelate: bool | np.ndarray | torch.Tensor = True,
    squash: str | Squash = "sigmoid",
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> ImageParam:
    """Build ``n`` images of ``channels`` × ``size`` (H, W) in the ``param`` parameterisation.

    ``param`` is ``"pixel"``, ``"fft"`` or a factory called with the same keyword arguments that returns an
    :class:`ImageParam`. Defaults: ``decorrelate=True`` (colour basis for 3 channels), ``squash="sigmoid"``,
    ``device="cpu"``. Random initial values come from ``generator`` (a CPU ``torch.Generator``).
    """
    squash = Squash(check_choice("squash", squash.value if isinstance(squash, Squash) else squash,
                                 [s.value for s in Squash]))  # fmt: skip
    device = torch.device(device)
    if callable(param) and not isinstance(param, str | ParamKind):
        made = param(n=n, channels=channels, size=size, decorrelate=decorrelate, squash=squash,
                     generator=generator, device=device)  # fmt: skip
        if not isinstance(made, ImageParam):
            raise OptionError(f"param factory {param!r} returned {type(made).__name__}; it must return an object "
                              "with parameters(), __call__() and project()")  # fmt: skip
        return made
    kind = ParamKind(check_choice("param", param.value if isinstance(param, ParamKind) else param,
                                  [k.value for k in ParamKind]))  # fmt: skip
    colour = colour_matrix(decorrelate, channels)
    cls: Any = PixelImage if kind is ParamKind.PIXEL else FourierImage
    return cls(n, channels, size, colour=colour, squash=squash, generator=generator, device=device)  # type: ignore[no-any-return]
