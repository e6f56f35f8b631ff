"""Issue 7 ("First contact"): the CLI speaks CLI, owns its Keras backend, knows .pt2 inputs, logs quietly.

Each test names the issue point it covers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.cli import cli_message, main
from convscope.demo.models import torch_digits_model
from convscope.errors import ModelLoadError
from convscope.loading import load_model

FACTORY = "convscope.demo.models:torch_digits_model"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def digit_png(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "digits.pt"
    torch.save(torch_digits_model(seed=3).state_dict(), path)
    return path


@pytest.fixture()
def torch_args(weights: Path) -> list[str]:
    """A factory with weights and its input shape: no warnings, no hints."""
    return [FACTORY, "--weights", str(weights), "--input-shape", "1,28,28"]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.rstrip("\n")


# -- point 2: KERAS_BACKEND ------------------------------------------------------------------------------
def test_import_convscope_does_not_import_keras() -> None:  # 7.2
    code = "import convscope, sys; assert 'keras' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "KERAS_BACKEND": "jax"})


def test_cli_overrides_another_keras_backend_with_one_note(tmp_path: Path, keras_seq: object) -> None:  # 7.2
    path = tmp_path / "m.keras"
    keras_seq.save(path)  # type: ignore[attr-defined]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run([sys.executable, "-m", "convscope.cli", "summary", str(path)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ("convscope: note: KERAS_BACKEND=tensorflow overridden: the CLI runs Keras on the "
                           "torch backend\n")  # fmt: skip
    assert 'Model: "tiny_seq" (keras)' in proc.stdout


def test_keras_imported_on_another_backend_is_one_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # 7.2
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", "{}")
    fake = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "jax"))
    monkeypatch.setitem(sys.modules, "keras", fake)
    assert main(["summary", str(path)]) == 2
    assert error_line(capsys) == (
        "convscope: error: keras was already imported on the 'jax' backend in this process; convscope loads "
        "Keras files on the torch backend: set KERAS_BACKEND=torch before the first `import keras`"
    )


# -- point 7: choices, hints, warnings, messages ----------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "flag", "bad", "closest"),
    [
        (["attribute", "m.keras", "x.png", "--method", "gradcm"], "--method", "gradcm", "gradcam"),
        (["maps", "m.keras", "x.png", "--layer", "c", "--cmap", "virdis"], "--cmap", "virdis", "viridis"),
        (["maps", "m.keras", "x.png", "--layer", "c", "--normalize", "chanel"], "--normalize", "chanel", "channel"),
        (["maximize", "m.keras", "--layer", "c", "--recipe", "plian"], "--recipe", "plian", "plain"),
        (["maximize", "m.keras", "--layer", "c", "--objective", "nueron"], "--objective", "nueron", "neuron"),
        (["filters", "m.keras", "--layer", "c", "--mode", "rbg"], "--mode", "rbg", "rgb"),
        (["attribute", "m.keras", "x.png", "--cmap", "tubro"], "--cmap", "tubro", "turbo"),
    ],
)
def test_unknown_choice_is_one_line_with_the_closest(
    argv: list[str], flag: str, bad: str, closest: str, capsys: pytest.CaptureFixture[str]
) -> None:  # 7.7
    assert main(argv) == 2  # checked before the (missing) model is loaded
    line = error_line(capsys)
    assert line.startswith(f"convscope: error: {flag} {bad!r} is not allowed; choose one of: ")
    assert re.search(rf"\(closest: {closest!r}[^()]*\)$", line), line
    assert "usage:" not in line


@pytest.mark.parametrize("verb", [["maps", "M", "I"], ["filters", "M"], ["attribute", "M", "I"]])
def test_cmap_help_and_error_list_the_same_maps(verb: list[str], capsys: pytest.CaptureFixture[str]) -> None:  # 7.7
    with pytest.raises(SystemExit):
        main([verb[0], "-h"])
    text = " ".join(capsys.readouterr().out.split())
    helped = re.search(r"--cmap CMAP colour map[^;]*; one of: ((?:[a-z]+, )*[a-z]+)", text)
    assert helped is not None, text
    assert main([*verb, "--layer", "x", "--cmap", "nope"]) == 2
    listed = re.search(r"choose one of: (.+?)(?: \(closest.*)?$", error_line(capsys))
    assert listed is not None
    from convscope.render.colormaps import COLORMAPS

    assert helped.group(1).split(", ") == [n.strip("'") for n in listed.group(1).split(", ")] == list(COLORMAPS)


def test_hints_name_cli_flags_not_python(digit_png: Path, weights: Path, capsys: pytest.CaptureFixture[str]) -> None:  # 7.7
    assert main(["summary", FACTORY, "--weights", str(weights)]) == 2
    assert error_line(capsys) == ("convscope: error: the input shape of this model is unknown; pass --input-shape "
                                  "C,H,W (PyTorch) or H,W,C (Keras)")  # fmt: skip
    assert main(["maps", FACTORY, str(digit_png), "--weights", str(weights), "--input-shape", "3,28,28",
                 "--layer", "conv_0"]) == 2  # fmt: skip
    assert error_line(capsys) == (
        "convscope: error: --input-shape 3,28,28 does not fit this torch model, which takes (1, ?, ?); give one "
        "sample as --input-shape C,H,W (PyTorch) or H,W,C (Keras)"
    )
    assert main(["maximize", FACTORY, "--weights", str(weights), "--class", "0", "--steps", "0"]) == 2
    line = error_line(capsys)
    assert "--steps 0 is not allowed" in line and "steps=" not in line
    assert main(["maximize", FACTORY, "--weights", str(weights), "--class", "0", "--steps", "1"]) == 2
    line = error_line(capsys)
    assert line.endswith("Pass --size N or --input-shape C,H,W") and "Scope(" not in line and "size=" not in line


def test_cli_message_rewrites_python_spellings() -> None:  # 7.7
    assert cli_message("seed=-1 is not allowed; pass an int >= 0") == "--seed -1 is not allowed; pass an int >= 0"
    assert cli_message("a\n  b") == "a b"
    assert cli_message("safe_mode=False stays") == "safe_mode=False stays"


def test_warnings_print_as_one_line_without_source(digit_png: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # 7.7, 7.4
    out = tmp_path / "f.png"
    assert main(["filters", FACTORY, "--layer", "conv_0", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err == (
        f"convscope: warning: factory {FACTORY!r} was loaded without --weights: its weights are the factory's own "
        "initialisation (random unless the factory loads trained weights)\n"
    )
    assert out.is_file()


def test_factory_without_weights_warns_in_python_too(weights: Path) -> None:  # 7.4
    with pytest.warns(UserWarning, match=r"loaded without --weights: its weights are the factory's own"):
        load_model(FACTORY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(FACTORY, weights=str(weights))  # with weights: silent


def test_corrupt_keras_file_says_it_is_not_an_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # 7.7
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip at all")
    assert main(["summary", str(path)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"convscope: error: {str(path)!r} is not a valid Keras archive: a .keras file is a zip")
    assert "File not found" not in line
    h5 = tmp_path / "broken.h5"
    h5.write_bytes(b"garbage!")
    with pytest.raises(ModelLoadError, match=r"is not an HDF5 file \(legacy Keras \.h5\): it starts with b'garbage!'"):
        load_model(str(h5))


@pytest.mark.parametrize("content", [b"101", b""])
def test_bad_weights_file_says_what_it_is(tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]) -> None:  # 7.7
    path = tmp_path / "w.pt"
    path.write_bytes(content)
    assert main(["summary", FACTORY, "--weights", str(path), "--input-shape", "1,28,28"]) == 2
    what = "an empty file" if not content else f"a file starting with {content!r}"
    assert error_line(capsys) == (
        f"convscope: error: weights file {str(path)!r} is not a PyTorch weights file: torch.save writes a zip "
        f"archive, and this is {what}; save a state dict with torch.save(model.state_dict(), path)"
    )


@pytest.mark.parametrize("verb", ["maximize", "attribute"])
def test_ambiguous_layer_lists_with_ellipsis_and_count(verb: str, digit_png: Path, torch_args: list[str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:  # 7.7
    argv = [verb, *torch_args, "--layer", "*"] + ([str(digit_png)] if verb == "attribute" else [])
    assert main(argv) == 2
    line = error_line(capsys)
    names = "'conv_0', 'relu_0', 'conv_1', 'relu_1', 'pool', 'dropout_0', 'flatten', 'dense_0'"
    assert f"layer query '*' matches 12 layers ({names}, … (12 in all)); " in line


def test_layer_index_lists_every_match_when_few(torch_net: torch.nn.Module) -> None:  # 7.7
    import convscope as cs

    with pytest.raises(cs.LayerNotFoundError) as info:
        cs.Scope(torch_net).layer("layer1.0.*")
    assert str(info.value) == ("layer query 'layer1.0.*' matches 4 layers ('layer1.0.conv1', 'layer1.0.bn1', "
                               "'layer1.0.relu', 'layer1.0.conv2'); name one of them")  # fmt: skip


def test_maximize_line_does_not_call_given_steps_default(torch_args: list[str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # 7.7
    out = tmp_path / "m.png"
    assert main(["maximize", *torch_args, "--layer", "conv_0", "--channels", "0", "--steps", "2", "-o", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert ", 2 steps, recipe 'default', objective " in line and "(default)" not in line
    assert line.endswith(f"-> {out}")


MAGIC = {".png": b"\x89PNG", ".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff", ".bmp": b"BM", ".tif": b"II*\x00",
         ".webp": b"RIFF"}  # fmt: skip


@pytest.mark.parametrize("suffix", list(MAGIC))
def test_output_format_follows_the_suffix(suffix: str, tmp_path: Path, torch_args: list[str]) -> None:  # 7.7
    out = tmp_path / f"f{suffix}"
    assert main(["filters", *torch_args, "--layer", "conv_0", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(MAGIC[suffix])
    assert Image.open(out).format == {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF"}.get(suffix, suffix[1:].upper())


def test_unknown_output_suffix_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:  # 7.7
    assert main(["filters", "m.keras", "--layer", "c", "-o", "x.gif"]) == 2
    assert error_line(capsys) == ("convscope: error: -o 'x.gif': cannot tell the picture format from the suffix "
                                  "'.gif'; use one of: .png .jpg .jpeg .webp .bmp .tif .tiff")  # fmt: skip
    assert main(["filters", "m.keras", "--layer", "c", "--scale", "0"]) == 2
    assert "--scale 0 is not allowed" in error_line(capsys)


def _verb_argv(verb: str, torch_args: list[str], digit_png: Path) -> list[str]:
    return {
        "maps": ["maps", *torch_args, str(digit_png), "--layer", "conv_1"],
        "filters": ["filters", *torch_args, "--layer", "conv_0"],
        "maximize": ["maximize", *torch_args, "--layer", "conv_1", "--channels", "0-1", "--steps", "1"],
        "attribute": ["attribute", *torch_args, str(digit_png), "--method", "gradcam", "--target", "3"],
    }[verb]


@pytest.mark.parametrize(("verb", "default_name"), [("maps", "maps_conv_1.png"), ("filters", "filters_conv_0.png"),
                                                     ("maximize", "maximize_conv_1.png"),
                                                     ("attribute", "attribute_gradcam.png")])  # fmt: skip
def test_one_output_rule_and_scale_on_every_picture_verb(
    verb: str, default_name: str, digit_png: Path, torch_args: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # 7.7
    monkeypatch.chdir(tmp_path)
    argv = _verb_argv(verb, torch_args, digit_png)
    assert main([*argv, "--scale", "1"]) == 0  # no -o: a default name from the verb and layer (or method)
    assert capsys.readouterr().out.rstrip().endswith(f"-> {default_name}")
    small = Image.open(tmp_path / default_name)
    assert small.format == "PNG"
    assert main([*argv, "--scale", "3", "-o", "big.png"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("-> big.png")
    big = Image.open(tmp_path / "big.png")
    assert big.size == (3 * small.width, 3 * small.height)
    assert np.array_equal(np.asarray(big)[::3, ::3], np.asarray(small))  # nearest neighbour


def test_maps_channels_selects_tiles(digit_png: Path, torch_args: list[str], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:  # 7.7
    out = tmp_path / "m.png"
    assert main(["maps", *torch_args, str(digit_png), "--layer", "conv_0", "--channels", "0-3,7", "-o", str(out),
                 "--scale", "1"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"conv_0: 5 of 32 maps of 26x26 -> {out}")
    import convscope as cs

    scope = cs.Scope(load_model(torch_args[0], weights=torch_args[2]), input_shape=(1, 28, 28))
    expected = scope.activations(str(digit_png), layers="conv_0")["conv_0"].grid(channels=[0, 1, 2, 3, 7])
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(expected))
    assert main(["maps", *torch_args, str(digit_png), "--layer", "conv_0", "--channels", "3-1"]) == 2
    assert "--channels '3-1' is not allowed" in error_line(capsys)


# -- point 9: torch.export files ---------------------------------------------------------------------------
@pytest.fixture()
def pt2_file(tmp_path: Path, torch_net: torch.nn.Module) -> Path:
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(torch_net, (torch.rand(1, 3, 8, 8),)), path)
    return path


def test_pt2_knows_its_input_and_original_types(pt2_file: Path, torch_net: torch.nn.Module,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # 7.9
    assert main(["summary", str(pt2_file)]) == 0  # no --input-shape
    out, err = capsys.readouterr()
    assert err == ""  # no LeafSpec FutureWarning
    assert 'Model: "TinyNet" (torch)' in out and "InterpreterModule" not in out
    for row in ("stem (Conv2d)", "layer1.0.conv1 (Conv2d)", "layer1.0.bn1 (BatchNorm2d)", "fc (Linear)"):
        assert row in out
    assert re.search(r"stem \(Conv2d\)\s+\(None, 4, 6, 6\)\s+112", out)
    assert f"Total params: {sum(p.numel() for p in torch_net.parameters()):,}" in out


def test_pt2_load_is_silent_and_declares_the_shape(pt2_file: Path) -> None:  # 7.9
    import convscope as cs

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(str(pt2_file))
    scope = cs.Scope(model)
    assert scope.adapter.model_input_shape() == (3, 8, 8)
    assert scope.layer("layer1.0.relu").type_name == "ReLU"
    acts = scope.activations(np.zeros((20, 20, 3), np.uint8), layers="stem")  # resized to the exported 8x8
    assert acts["stem"].shape == (1, 4, 6, 6)


# -- point 10: quiet logs ----------------------------------------------------------------------------------
def test_progress_off_a_terminal_is_one_line_per_job(torch_net: torch.nn.Module,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # 7.10
    import convscope as cs

    cs.Scope(torch_net, input_shape=(3, 8, 8)).maximize(cs.objectives.channel("stem", 0), steps=3, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert re.fullmatch(r"maximize stem · 0: 3 steps in \d+\.\ds\n", err), err


def test_pyproject_license_is_an_spdx_string() -> None:  # 7.10
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert not [w for w in caught if "license" in str(w.message).lower()]
