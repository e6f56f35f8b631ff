"""Sample images that ship with convscope, so examples run on a fresh install with no downloads.

>>> from convscope.samples import sample_image
>>> sample_image("digit").endswith("digit.png")
True
"""

from __future__ import annotations

from pathlib import Path

from convscope.errors import check_choice

#: name -> (file, what it is). ``cat``: scikit-image's "chelsea" photo (CC0, Stefan van der Walt),
#: 224 x 224 RGB JPEG. ``digit``: a handwritten 3 from the UCI digits set as shipped by scikit-learn
#: (BSD), upscaled to 28 x 28 gray PNG, white on black like MNIST.
SAMPLES: dict[str, tuple[str, str]] = {
    "cat": ("cat.jpg", "224x224 RGB photo of a cat"),
    "digit": ("digit.png", "28x28 gray handwritten digit 3"),
}


def sample_image(name: str = "cat") -> str:
    """Path of a bundled sample image: ``"cat"`` (default, 224x224 RGB) or ``"digit"`` (28x28 gray).

    Example::

        acts = scope.activations(cs.sample_image("cat"), layers="conv*")
    """
    check_choice("name", name, list(SAMPLES))
    return str(Path(__file__).with_name("data") / SAMPLES[name][0])
