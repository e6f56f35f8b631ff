"""What one explorer launch holds: the scope, the uploaded images (by server-issued id), the layer catalogue
and bounded LRU caches. Nothing here computes a picture; :mod:`convscope.explorer.views` does, by calling the
library's result objects."""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

#: Largest accepted image, in pixels (a decompression bomb is refused before it is decoded).
MAX_PIXELS = 40_000_000
#: Largest number of images held at once (oldest dropped first).
MAX_IMAGES = 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ImageRefused(ValueError):
    """An upload that is not an image, or one too large; the API answers 4xx with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StoredImage:
    id: str
    name: str
    sha256: str
    picture: Image.Image  # RGB or L, fully decoded, EXIF orientation applied

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "sha256": self.sha256, "width": self.picture.width,
                "height": self.picture.height}  # fmt: skip


def decode_image(data: bytes, name: str, *, max_pixels: int = MAX_PIXELS) -> tuple[str, Image.Image]:
    """``(sha256, picture)`` of uploaded bytes; the size is read from the header and checked BEFORE decoding."""
    from PIL import ImageOps

    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageRefused(f"{name!r} declares {width}x{height} pixels; at most {max_pixels:,} are "
                                   "accepted", 413)  # fmt: skip
            img.load()
            turned = ImageOps.exif_transpose(img) or img
            picture = turned.convert("RGB") if turned.mode not in ("RGB", "L") else turned.copy()
    except ImageRefused:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRefused(f"{name!r}: {exc}", 413) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageRefused(f"{name!r} is not an image Pillow can read ({type(exc).__name__})") from None
    return digest, picture


class ImageStore:
    """Images addressed by server-issued ids (``img-`` + 16 hex digits of the sha256); never by path."""

    def __init__(self, limit: int = MAX_IMAGES) -> None:
        self._items: OrderedDict[str, StoredImage] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit

    def add(self, data: bytes, name: str) -> StoredImage:
        digest, picture = decode_image(data, name)
        ident = "img-" + digest[:16]
        with self._lock:
            if ident not in self._items:
                self._items[ident] = StoredImage(ident, Path(name).name[:120] or "image", digest, picture)
                while len(self._items) > self.limit:
                    self._items.popitem(last=False)
            return self._items[ident]

    def add_folder_report(self, folder: str | Path, limit: int = MAX_IMAGES) -> tuple[list[StoredImage], list[str]]:
        """The images of ``folder`` (recursive, sorted, hidden files left out), at most ``limit``, and the
        relative paths of the files skipped because they are not images Pillow can read (or too large)."""
        base = Path(folder)
        files = sorted((p for p in base.rglob("*") if p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(base).parts)),
                       key=lambda p: p.relative_to(base).as_posix())  # fmt: skip
        out: list[StoredImage] = []
        skipped: list[str] = []
        for path in files:
            if len(out) >= limit:
                break
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(path.relative_to(base).as_posix())
                continue
            try:
                out.append(self.add(path.read_bytes(), path.name))
            except (ImageRefused, OSError):
                skipped.append(path.relative_to(base).as_posix())
        return out, skipped

    def get(self, ident: str) -> StoredImage | None:
        with self._lock:
            return self._items.get(ident)

    def all(self) -> list[StoredImage]:
        with self._lock:
            return list(self._items.values())


class LRU:
    """A thread-safe least-recently-used cache bounded by entry count and by total size in bytes."""

    def __init__(self, entries: int = 512, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.entries, self.max_bytes, self.bytes = entries, max_bytes, 0
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key][0]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any, size: int = 0) -> Any:
        with self._lock:
            if key in self._data:
                self.bytes -= self._data.pop(key)[1]
            self._data[key] = (value, size)
            self.bytes += size
            while self._data and (len(self._data) > self.entries or self.bytes > self.max_bytes):
                self.bytes -= self._data.popitem(last=False)[1][1]
        return value

    def get_or_make(self, key: Hashable, make: Callable[[], Any], size: Callable[[Any], int] = lambda v: 0) -> Any:
        found = self.get(key)
        if found is not None:
            return found
        value = make()
        return self.put(key, value, size(value))

    def __len__(self) -> int:
        return len(self._data)


def fingerprint(scope: Any) -> str:
    """sha256 (16 hex digits) of the model class, framework and every weight's bytes, computed once."""
    h = hashlib.sha256(f"{type(scope.model).__qualname__}:{scope.framework}".encode())
    model = scope.model
    if hasattr(model, "state_dict"):
        for key, tensor in model.state_dict().items():
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    else:  # Keras
        for w in getattr(model, "weights", []):
            h.update(str(getattr(w, "path", w.name)).encode())
            h.update(memoryview(_keras_bytes(w)))
    return h.hexdigest()[:16]


def _keras_bytes(w: Any) -> bytes:
    import numpy as np

    return np.asarray(w.numpy() if hasattr(w, "numpy") else w).tobytes()
