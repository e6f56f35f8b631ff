"""Every ```python block of README.md runs as pasted, each in a fresh interpreter in an empty folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_block_runs(index: int, tmp_path: Path) -> None:
    code = python_blocks()[index]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}  # the snippet must set what it needs
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, f"README block {index} failed:\n{code}\n--- stderr ---\n{proc.stderr[-3000:]}"
    written = {p.name for p in tmp_path.iterdir()}
    for name in re.findall(r"""save\(["']([^"']+)["']""", code):  # every picture it saves exists and is not blank
        assert name in written, f"README block {index} should have written {name}"
        from PIL import Image

        with Image.open(tmp_path / name) as img:
            lo, hi = img.convert("L").getextrema()
        assert hi > lo, f"{name} from README block {index} is a flat image"
