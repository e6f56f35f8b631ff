"""``Scope``: the one entry point over a PyTorch or Keras 3 model."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from convscope.adapters import adapt
from convscope.adapters.base import LayerHandle, Layout
from convscope.capture import Capture, Recording, Target
from convscope.errors import LayerNotFoundError, OptionError
from convscope.featuremaps import Activations, FeatureMaps, Filters
from convscope.layers import LayerIndex, LayerQuery
from convscope.summary import ModelSummary, keras_summary, torch_summary

_ITEM = re.compile(r"^(?P<name>.+)\[(?P<item>-?\d+)\]$")
_CALL = re.compile(r"^(?P<name>.+)@(?P<call>\d+)$")


class Scope:
    """Look inside a CNN: summary, layer lookup, one-pass activations, filters.

    Args:
        model: a ``torch.nn.Module`` or a Keras 3 model (``KERAS_BACKEND=torch``).
        input_shape: one sample's shape in the model's layout, no batch — ``(3, 224, 224)`` for
            PyTorch, ``(224, 224, 3)`` for Keras. Default: what the model declares, else the last input.
        preprocess: ``"torch"`` (ImageNet mean/std on [0, 1]), ``"caffe"`` (RGB → BGR, [0, 255] minus the
            BGR ImageNet mean, as Keras ``ResNet50``/``VGG16``) or ``"tf"`` ([-1, 1], as Keras
            ``MobileNetV2``); default ``None``: ``scale``/``mean``/``std`` below. A preset cannot be
            combined with your own ``scale``/``mean``/``std``.
        resize: how images of another size reach the input size: ``"squash"`` (default: stretch),
            ``"crop"`` (short side to the input size, then the centre) or ``"pad"`` (letterbox on black).
        scale: factor applied to uint8 images (default ``1/255``, giving [0, 1]).
        mean, std: per-channel normalisation applied to images after scaling (default none).

    Float arrays and tensors are model input as given: neither preprocessing nor resizing touches them.

    Example::

        scope = cs.Scope(model, input_shape=(3, 224, 224), preprocess="torch", resize="crop")
        print(scope.summary())
        acts = scope.activations("cat.jpg", layers=["features.0", "features.2"])
        acts["features.0"].grid(cols=8)
    """

    def __new__(cls, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        """A Keras model on the TensorFlow/JAX backend gets a ``BridgedScope`` (see ``convscope.bridge``)."""
        from convscope.bridge import needs_bridge

        if cls is Scope and needs_bridge(model):
            from convscope.bridge.bridged import BridgedScope

            return BridgedScope(model, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        model: Any,
        *,
        input_shape: Sequence[int] | None = None,
        preprocess: str | None = None,
        resize: str = "squash",
        scale: float | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if input_shape is not None and (
            len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape)
        ):
            raise OptionError(
                f"input_shape={tuple(input_shape)!r}: give one sample's shape without batch, three positive "
                "ints in the model's layout, e.g. (3, 224, 224) for PyTorch or (224, 224, 3) for Keras"
            )
        self.model = model
        self.adapter = adapt(model, input_shape=tuple(input_shape) if input_shape is not None else None)
        self._check_input_shape()
        self.index = LayerIndex(self.adapter.handles)
        from convscope.inputs import InputSpec
        from convscope.preprocessing import to_preprocess, to_resize

        # Validates the options now (unknown names, a preset with its own mean/std); channels are checked
        # against the model in input_spec(). Effective values: scale/mean/std/bgr of the resolved spec.
        self._given: dict[str, Any] = {"scale": scale, "mean": mean, "std": std}
        preset, mode = to_preprocess(preprocess), to_resize(resize)
        spec = InputSpec(self.layout, **self._given, preprocess=preset, resize=mode)
        self.preprocess, self.resize = spec.preprocess, spec.resize
        self.scale, self.mean, self.std, self.bgr = spec.scale, spec.mean, spec.std, spec.bgr
        self._last_shape: tuple[int, ...] | None = None
        if self.preprocess is not None:
            self.input_spec()  # a preset made for RGB on a gray model fails here, not at the first image

    def preprocessing(self) -> dict[str, Any]:
        """The options that rebuild this scope's preprocessing: ``Scope(other, **scope.preprocessing())``."""
        return {"preprocess": self.preprocess, "resize": self.resize, **self._given}

    def _check_input_shape(self) -> None:
        given, declared = self.adapter.input_shape, self.adapter.model_input_shape()
        if given is None or declared is None or len(declared) != len(given):
            return
        if all(d is None or d == g for d, g in zip(declared, given, strict=True)):
            return
        shown = "(" + ", ".join("?" if d is None else str(d) for d in declared) + ")"
        layout = "(C, H, W)" if self.layout is Layout.NCHW else "(H, W, C)"
        raise OptionError(
            f"input_shape={given!r} does not fit this {self.framework} model, which takes {shown}; "
            f"give one sample as {layout} in the model's own layout"
        )

    # -- model facts -------------------------------------------------------------------------
    @property
    def framework(self) -> str:
        return self.adapter.framework

    @property
    def layout(self) -> Layout:
        return self.adapter.layout

    @property
    def layer_names(self) -> list[str]:
        return [self.index.display_name(h) for h in self.adapter.handles]

    def layer(self, query: LayerQuery) -> LayerHandle:
        """One layer by name, alias, dotted path, index, glob or type (see :class:`LayerIndex`)."""
        return self.index.find(query)

    def layers(self, query: Any = None) -> list[LayerHandle]:
        """All layers matching ``query`` (every layer when ``None``)."""
        return list(self.adapter.handles) if query is None else self.index.find_all(query)

    def rename(self, old: LayerQuery, new: str) -> Scope:
        """Alias a layer: both names resolve afterwards and results are labelled ``new``.

        Keras 3 ignores ``layer._name = ...``; this works for both frameworks. Returns ``self``.
        """
        self.index.rename(old, new)
        return self

    # -- inputs ------------------------------------------------------------------------------
    def input_spec(self) -> Any:
        """The :class:`convscope.inputs.InputSpec` images are prepared by: layout, channels, size (when the
        model declares them or ``input_shape`` gives them), scale/mean/std, preset and resize mode."""
        from convscope.inputs import InputSpec

        # Only declared shapes constrain inputs: the last input's shape never does (fully convolutional
        # models take any size), it only serves summary() as an example.
        shape: tuple[int | None, ...] | None = self.adapter.input_shape or self.adapter.model_input_shape()
        channels: int | None = None
        size: tuple[int, int] | None = None
        if shape is not None and len(shape) == 3:
            c, hw = (shape[0], shape[1:]) if self.layout is Layout.NCHW else (shape[-1], shape[:2])
            channels = c
            if hw[0] is not None and hw[1] is not None:
                size = (hw[0], hw[1])
        return InputSpec(
            self.layout, channels, size, preprocess=self.preprocess, resize=self.resize, **self._given
        )

    def prepare(self, inputs: Any) -> torch.Tensor:
        """Turn paths, PIL images, arrays or tensors into one model-input batch (see ``convscope.inputs``)."""
        from convscope.inputs import prepare

        return prepare(inputs, self.input_spec(), device=self.adapter.device)

    def example_input(self) -> torch.Tensor:
        """A zero batch of one sample, for passes that only need shapes."""
        shape = self.adapter.input_shape or self._last_shape
        if shape is None:
            declared = self.adapter.model_input_shape()
            if declared is not None and all(isinstance(d, int) for d in declared):
                shape = tuple(int(d or 0) for d in declared)
        if shape is None:
            raise OptionError(
                "the input shape of this model is unknown; pass Scope(model, input_shape=(C, H, W)) "
                "(PyTorch) or (H, W, C) (Keras), or run scope.activations(...) on an input first"
            )
        return torch.zeros((1, *shape), device=self.adapter.device)

    # -- summary -----------------------------------------------------------------------------
    def summary(self) -> ModelSummary:
        """Per-layer table data; ``print()`` it for a Keras-like table."""
        display = self.index.display_name
        if self.framework == "keras":
            try:
                x = self.example_input()
            except OptionError:
                x = None
            return keras_summary(self.adapter, x, display)
        scripted = isinstance(self.model, torch.jit.ScriptModule)
        x = torch.zeros(0) if scripted else self.example_input()
        return torch_summary(self.adapter, x, display)

    # -- activations -------------------------------------------------------------------------
    def targets(self, layers: Any) -> list[Target]:
        """Resolve layer queries: ``'name[i]'`` selects element i of a tuple output; ``'name:pre'`` the
        input of a Keras layer's fused activation (pre-ReLU values; the same as ``'name'`` for layers
        without one, such as every PyTorch module); ``'name@k'`` only call k (from 0) of a module that
        runs several times in one pass, as :meth:`activations` prints it."""
        queries = layers if isinstance(layers, list | tuple) else [layers]
        out: list[Target] = []
        for q in queries:
            item, pre, call = None, False, None
            if isinstance(q, str) and (c := _CALL.match(q)) and not self._is_layer(q):
                q, call = c.group("name"), int(c.group("call"))
            if isinstance(q, str) and q.endswith(":pre") and not self._is_layer(q):
                q, pre = q[: -len(":pre")], True
            if isinstance(q, str) and (m := _ITEM.match(q)) and not self._is_layer(q):
                q, item = m.group("name"), int(m.group("item"))
            for h in self.index.find_all(q):
                t = Target(h, item, pre, call)
                if t not in out:
                    out.append(t)
        if not out:
            raise LayerNotFoundError("no layers requested; name at least one layer")
        return out

    def _is_layer(self, name: str) -> bool:
        try:
            self.index.find(name)
        except LayerNotFoundError:
            return False
        return True

    def record(self, inputs: Any, layers: Any = None, **capture_options: Any) -> tuple[Recording, Any]:
        """Low level: one forward pass under :class:`Capture`; returns (recording, model output)."""
        prepared = capture_options.pop("prepared", False)
        x = inputs if prepared and isinstance(inputs, torch.Tensor) else self.prepare(inputs)
        with Capture(self.adapter, self.targets(layers), **capture_options) as cap:
            output = cap.run(x)
        self._last_shape = tuple(x.shape[1:])
        return cap.recording, output

    def activations(self, inputs: Any, layers: Any = None, *, grad: bool = False) -> Activations:
        """Outputs of ``layers`` for ``inputs`` from ONE forward pass, as name → :class:`FeatureMaps`.

        Args:
            inputs: image path(s), PIL image(s), uint8 arrays, or a float array/tensor already shaped
                as model input (Keras (N, H, W, C), PyTorch (N, C, H, W)), used exactly as given.
            layers: a query or list of queries (names, paths, indices, globs, types; ``'name[i]'``
                picks one element of a tuple output). Default ``None``: every leaf layer (no
                sub-layers; containers such as ``layer1`` must be named) with a spatial (4-D) output.
            grad: keep the autograd graph on the recorded tensors (default ``False``).

        A layer called more than once is recorded per call: ``'name'`` holds the first call,
        ``'name@1'``, ``'name@2'`` … the later ones. The pass runs in inference mode.
        """
        if layers is None:
            seen: set[int] = set()  # a module held under two names is recorded once
            targets = []
            for h in self.adapter.handles:
                if h.is_leaf and id(h.module) not in seen:
                    seen.add(id(h.module))
                    targets.append(Target(h))
            options: dict[str, Any] = {"skip_errors": True, "keep": lambda t: t.dim() == 4}
        else:
            targets, options = self.targets(layers), {}
        x = self.prepare(inputs)
        with Capture(self.adapter, targets, grad=grad, **options) as cap:
            output = cap.run(x)
        self._last_shape = tuple(x.shape[1:])  # after a pass that worked: an example for summary()
        by_key = {t.key: t for t in targets}
        maps: dict[str, FeatureMaps] = {}
        for key in cap.recording.order:
            t = by_key[key]
            label = self.index.display_name(t.handle) + ("" if t.item is None else f"[{t.item}]")
            label += ":pre" if t.pre else ""
            for call, tensor in enumerate(cap.recording.values[key]):
                call = call if t.call is None else t.call
                name = label if call == 0 else f"{label}@{call}"
                maps[name] = FeatureMaps(name, tensor, self.layout)
        if layers is not None:
            for t in targets:
                cap.recording.get(t.key)  # a requested layer that never ran is an error, not a gap
        return Activations(maps, output)

    # -- filters -----------------------------------------------------------------------------
    def filters(self, layer: LayerQuery) -> Filters:
        """The kernels of a conv layer, in (out_channels, in_channels, kh, kw) order."""
        handle = self.index.find(layer)
        w = self.adapter.weights(handle)
        kernel = w.get("kernel")
        if kernel is None or kernel.ndim != 4:
            convs = [self.index.display_name(h) for h in self.adapter.handles if self._has_conv_kernel(h)]
            raise OptionError(
                f"layer {self.index.display_name(handle)!r} ({handle.type_name}) has no 2-D convolution "
                f"kernel; conv layers: {', '.join(map(repr, convs[:12])) or 'none'}"
            )
        return Filters(self.index.display_name(handle), kernel, w.get("bias"))

    def _has_conv_kernel(self, handle: LayerHandle) -> bool:
        shape = self.adapter.kernel_shape(handle)
        return shape is not None and len(shape) == 4

    def __repr__(self) -> str:
        return f"Scope({type(self.model).__name__}, framework={self.framework}, layers={len(self.adapter.handles)})"

    # -- predictions -------------------------------------------------------------------------
    def predict(self, inputs: Any, *, k: int = 5, labels: Any = None) -> Any:
        """The model's top-``k`` classes for each input (default ``k=5``): index, softmax probability of the
        pre-softmax logits, and the name from ``labels`` (a list of names or a text file with one per
        line; default ``None``). Returns a ``convscope.predictions.Predictions``; print it for a table.

        Example::

            print(scope.predict("cat.jpg", labels="classes.txt"))
        """
        from convscope.predictions import predict

        return predict(self, inputs, k=k, labels=labels)

    # -- attribution -------------------------------------------------------------------------
    def attribute(
        self, inputs: Any, *, method: Any = "gradcam", target: Any = None, layer: Any = None, **options: Any
    ) -> Any:
        """Attribution maps for ``inputs``: which pixels (or layer positions) drive the target score.

        Args:
            inputs: as for :meth:`activations` (paths, PIL images, arrays, tensors; a batch is fine).
            method: a name from ``cs.attribution.methods()`` (default ``"gradcam"``) or a configured
                ``cs.attribution.Method`` instance.
            target: ``None`` (default: each sample's top-1 class), a class index, one index per
                sample, or ``fn(output) -> (batch,)`` scores. Class scores are pre-softmax logits,
                also for models that end in a softmax layer.
            layer: CAM methods only — any layer query (``'name[i]'`` for a tuple output). Default: the
                output of the last block — the latest spatial tensor that every path from the input to
                the output goes through (``layer4`` / ``layer4.1`` on a ResNet, ``conv5_block3_out`` on
                Keras' ResNet50, the last conv/pool of a VGG); the chosen name is in ``.layer``.
            **options: method options, e.g. ``steps=64`` for Integrated Gradients (see each method's
                docstring; unknown names raise ``OptionError`` listing the valid ones).

        Returns a ``cs.attribution.Attribution`` (``.raw``, ``.maps``, ``.targets``, ``.overlay()``,
        ``.grid()``). The model runs in eval mode with parameters frozen; modes, ``requires_grad``
        flags and hooks are restored afterwards, and ``inputs`` are never modified.

        Example::

            att = scope.attribute("cat.jpg", method="gradcam", target=281)
            att.overlay(alpha=0.4).save("cat_gradcam.png")
        """
        from convscope.attribution.api import attribute

        return attribute(self, inputs, method=method, target=target, layer=layer, **options)

    def sanity_check(
        self, inputs: Any, *, method: Any = "gradcam", target: Any = None, layer: Any = None, **options: Any
    ) -> Any:
        """Cascading model-parameter randomisation test (Adebayo et al. 2018) of an attribution method.

        On a deep copy of the model (yours is never touched), layers with parameters are re-initialised
        one by one from the output down; after each step the map is recomputed for the same targets and
        compared with the original by Spearman rank correlation. A method whose maps survive
        randomisation explains the input, not the model. Options: ``threshold=0.5`` (the verdict passes
        when the mean |ρ| after randomising every layer is below it), ``init_seed=0`` (the random
        re-initialisation), plus method options.

        Returns a ``SanityReport``: ``.layers``, ``.correlations`` (steps, N), ``.verdict`` (pass, fail
        or inconclusive — the last when an original map is constant, e.g. dead ReLUs or an untrained
        model) and ``.passed`` (``True``/``False``, ``None`` when inconclusive); print it for a table.

        Example::

            report = scope.sanity_check(x, method="gradcam")
            print(report)
        """
        from convscope.attribution.sanity import sanity_check

        return sanity_check(self, inputs, method=method, target=target, layer=layer, **options)

    # -- activation maximisation ----------------------------------------------------------------
    def maximize(
        self,
        objective: Any,
        *,
        steps: int | None = None,
        size: int | Sequence[int] | None = None,
        param: Any = None,
        transforms: Any = None,
        regularizers: Any = None,
        decorrelate: Any = None,
        lr: float | None = None,
        seed: int = 0,
        recipe: str = "default",
        batch_size: int | None = None,
        progress: bool | Callable[[int, int], object] | None = None,
    ) -> Any:
        """Synthesise images that maximise ``objective``; returns a :class:`~convscope.optim.Visualization`.

        Args:
            objective: a :mod:`convscope.objectives` objective (``channel``, ``neuron``, ``layer``, ``logit``,
                ``direction``, ``diversity``, combined with ``+ - *`` and ``/``), or a list of them; a list
                or a batched objective (``channel("conv_1", range(16))``) gives one image per entry.
            steps: optimiser steps (default: the recipe's, 256).
            size: image side or (height, width) (default: the model's input size, else 128).
            param: ``"fft"`` (default recipe) or ``"pixel"`` (plain recipe), or a factory.
            transforms: list of :mod:`convscope.optim.transforms` (default: the recipe's; ``[]`` for none).
            regularizers: list of ``l1``/``l2``/``total_variation``/``blur`` penalties (default none).
            decorrelate: colour decorrelation for RGB models (default: the recipe's).
            lr: Adam step size (default 0.05).
            seed: seeds every random draw (default 0): the same seed gives the same images.
            recipe: ``"default"`` (Fourier, decorrelated, transforms) or ``"plain"`` (gradient ascent on
                pixels, Erhan et al. 2009).
            batch_size: images optimised together (default: as many as fit in memory).
            progress: a tqdm bar (default ``None``: for runs of 100 steps or more; ``True`` always, ``False``
                never), or a callable called as ``progress(step, total)`` after every optimiser step (step
                1..total) instead of the bar.

        The image is in [0, 1], then scaled and normalised by this scope's ``scale``/``mean``/``std`` to
        model input. Parameters are frozen during the run; hooks, modes and ``requires_grad`` are restored
        after it, also when it fails or is interrupted.

        Example::

            vis = scope.maximize(cs.objectives.channel("conv_1", range(16)), steps=128)
            vis.grid().save("conv_1.png"); vis.values; model(vis.inputs)
        """
        from convscope.optim.optimize import maximize

        return maximize(self, objective, steps=steps, size=size, param=param, transforms=transforms,
                        regularizers=regularizers, decorrelate=decorrelate, lr=lr, seed=seed, recipe=recipe,
                        batch_size=batch_size, progress=progress)  # fmt: skip

    def maximize_layer(self, layer: LayerQuery, *, channels: Any = None, **options: Any) -> Any:
        """One synthesised image per channel of ``layer`` (default all; an int ``k`` means the first ``k``,
        or pass a list/range); ``options`` as for :meth:`maximize`. Returns a ``Visualization`` whose
        ``.grid()`` is the per-layer gallery.

        Example: ``scope.maximize_layer("conv_1", channels=range(16), steps=128).save("conv_1.png")``
        """
        from convscope.optim.optimize import maximize_layer

        return maximize_layer(self, layer, channels=channels, **options)

    # -- dataset examples --------------------------------------------------------------------------
    def scan(
        self,
        data: Any,
        layers: Any = None,
        *,
        k: int = 16,
        store: Any = None,
        batch_size: int = 64,
        shard_size: int | None = None,
        backend: str = "local",
        ray_address: str | None = None,
        overwrite: bool = False,
        progress: bool = True,
    ) -> Any:
        """Stream ``data`` through the model once; per channel keep the exact top-``k`` images (by spatial
        max and mean) and statistics. Returns a ``cs.Scan`` (see :mod:`convscope.dataset.scan`).

        Args:
            data: an image folder (recursive; class sub-folders become labels), a list of paths, a numpy
                array of images, a torch ``Dataset``/``DataLoader``, or an iterable of batches ``x``/``(x, y)``.
            layers: layer queries (default ``None``: every conv layer); one forward pass records them all.
            k: images kept per channel (default 16).
            store: a folder to write the scan to and resume from (default ``None``: memory only); a store
                of another model, preprocessing, data, layer set or k raises ``StoreMismatchError``
                unless ``overwrite=True`` (default ``False``).
            batch_size: images per forward pass (default 64). shard_size: images per shard, the unit of
                resuming and of Ray work (default ``None``: 1024 rounded down to a multiple of batch_size;
                batches are aligned to shard starts, so results do not depend on the shard size).
            backend: ``"local"`` (default) or ``"ray"`` — the same shard scanner as a Ray Data actor pool;
                joins ``ray_address``/``RAY_ADDRESS`` or an initialised Ray, else starts a local one on all
                CPUs but one. Results equal the local backend's, tie order included.
            progress: a tqdm bar on a terminal, else one line per shard, on stderr (default ``True``).

        Example: ``scope.scan("photos/", layers="layer4", k=9).top("layer4", 7).grid()``
        """
        from convscope.dataset.scan import scan

        return scan(self, data, layers=layers, k=k, store=store, batch_size=batch_size, shard_size=shard_size,
                    backend=backend, ray_address=ray_address, overwrite=overwrite, progress=progress)

    def receptive_field(self, layer: LayerQuery) -> Any:
        """``layer``'s receptive field from the real graph: ``.size``, ``.stride``, ``.box(y, x, clip=False)``
        (see :mod:`convscope.dataset.receptive`). Example: ``scope.receptive_field("layer4").size``."""
        from convscope.dataset.receptive import receptive_field

        return receptive_field(self, layer)
