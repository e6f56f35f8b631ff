"""Bundled demo data: scikit-learn's 8x8 digits upsampled to MNIST size, and scikit-image sample photos.

Nothing here downloads anything; both sources ship inside their libraries.

Example:
    >>> split = load_digits_28(seed=0)
    >>> split.x_train.shape, split.x_train.dtype
    ((1437, 28, 28), dtype('float32'))
    >>> as_nchw(split.x_test).shape
    (360, 1, 28, 28)
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from convscope.errors import InputError, OptionError, check_choice

#: Sample photos bundled with scikit-image, by the name ``sample_photo`` accepts.
PHOTOS: tuple[str, ...] = ("chelsea", "astronaut", "coffee")

DIGITS_SIDE = 28
_RAW_SIDE = 8
_RAW_MAX = 16.0  # scikit-learn's digits count ink in 16 levels


@dataclass(frozen=True)
class DigitsSplit:
    """A stratified train/test split of 28x28 digits.

    Images are ``(N, 28, 28)`` float32 in ``[0, 1]`` (white ink on black, like MNIST); labels are
    ``(N,)`` int64 in ``0..9``. Use :func:`as_nhwc` / :func:`as_nchw` to add the channel axis.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        """Number of digit classes (10)."""
        return 10


def bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of bilinear resampling with half-pixel centres (PIL's convention
    when upsampling); ``m @ v`` resizes a vector and ``m @ img @ m.T`` a square image.
    """
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def load_digits_28(seed: int = 0, test_fraction: float = 0.2) -> DigitsSplit:
    """scikit-learn's 1,797 bundled 8x8 digits, bilinearly resized to 28x28 and split by class.

    Args:
        seed: random state of the stratified split (default 0); the same seed gives the same split.
        test_fraction: share of images held out for testing, in ``(0, 1)`` (default 0.2: 1437/360).

    Example:
        >>> split = load_digits_28()
        >>> float(split.x_train.max()) <= 1.0, sorted(set(split.y_test.tolist())) == list(range(10))
        (True, True)
    """
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, numbers.Real)
        or not 0 < test_fraction < 1
    ):
        raise OptionError(
            f"test_fraction={test_fraction!r} is not allowed; pass a float strictly between 0 and 1"
        )
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    images = np.asarray(raw.images, dtype=np.float64) / _RAW_MAX
    m = bilinear_matrix(DIGITS_SIDE, _RAW_SIDE)
    x = np.einsum("ij,njk,lk->nil", m, images, m).astype(np.float32)
    np.clip(x, 0.0, 1.0, out=x)
    y = np.asarray(raw.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=float(test_fraction), random_state=seed, stratify=y
    )
    return DigitsSplit(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _check_images(x: np.ndarray, fn: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise InputError(
            f"{fn} received an array of shape {arr.shape}; it expects grey images shaped (N, H, W), "
            "e.g. DigitsSplit.x_train"
        )
    return arr


def as_nhwc(x: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` grey images as ``(N, H, W, 1)`` (channels last, for Keras)."""
    return _check_images(x, "as_nhwc")[..., np.newaxis]


def as_nchw(x: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` grey images as ``(N, 1, H, W)`` (channels first, for PyTorch)."""
    return _check_images(x, "as_nchw")[:, np.newaxis]


def sample_photo(name: str = "chelsea", size: int = 224) -> np.ndarray:
    """A bundled scikit-image photo, centre-cropped to a square and resized to ``size`` x ``size``.

    Args:
        name: one of :data:`PHOTOS` (default ``"chelsea"``, the cat).
        size: side of the returned square in pixels (default 224, the ImageNet input size).

    Returns:
        ``(size, size, 3)`` uint8 RGB array.

    Example:
        >>> sample_photo("coffee", size=64).shape
        (64, 64, 3)
    """
    check_choice("name", name, PHOTOS)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise OptionError(f"size={size!r} is not allowed; pass a positive int such as 224")
    from PIL import Image
    from skimage import data as skdata

    photo = np.asarray(getattr(skdata, name)())
    h, w = photo.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(photo[top : top + side, left : left + side, :3], dtype=np.uint8)
    resized = Image.fromarray(square).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)
