"""Per-backend checks of the Keras bridge: ``python tests/bridge_checks.py tensorflow|jax [apps]``.

Run by tests/test_bridge.py in a fresh process per backend (Keras picks its backend once per process).
Every check compares convscope in its torch-backend worker with the backend's own computation on the
same model. Prints ``ok NAME seconds`` per check and ``ATEXIT_PID=...`` for a worker left open on
purpose (the test then checks that interpreter exit stopped it).
"""

from __future__ import annotations

import os
import sys
import time

BACKEND = sys.argv[1]
os.environ["KERAS_BACKEND"] = BACKEND
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import convscope as cs  # noqa: E402

RTOL_ACT, RTOL_GRAD = 1e-4, 1e-3
rng = np.random.default_rng(0)


def close(a: np.ndarray, b: np.ndarray, rtol: float, what: str) -> None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)
    assert err <= rtol, f"{what}: relative error {err:.2e} > {rtol}"


def check(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    print(f"ok {fn.__name__} {time.perf_counter() - t:.1f}s", flush=True)
    return fn


# -- the seed tutorials' MNIST ConvNet, as written for tf.keras ------------------------------------
if BACKEND == "tensorflow":
    import tensorflow as tf

    K = tf.keras
else:
    K = keras

model = K.models.Sequential([
    K.layers.Input(shape=(28, 28, 1)),
    K.layers.Conv2D(32, (3, 3), activation="relu", name="conv2d_1"),
    K.layers.MaxPooling2D((2, 2), name="pool_1"),
    K.layers.Conv2D(64, (3, 3), activation="relu", name="conv2d_2"),
    K.layers.MaxPooling2D((2, 2), name="pool_2"),
    K.layers.Flatten(name="flatten"),
    K.layers.Dense(10, name="logits"),
])  # fmt: skip
model.compile(optimizer="adam", loss=K.losses.SparseCategoricalCrossentropy(from_logits=True))
x_train = rng.random((64, 28, 28, 1), dtype=np.float32)
y_train = rng.integers(0, 10, 64)
model.fit(x_train, y_train, epochs=1, batch_size=32, verbose=0)
model.summary()
x = x_train[:4]
conv_layers = [layer for layer in model.layers if "conv" in layer.name]


def submodel_predict(m, names, inputs):  # type: ignore[no-untyped-def]
    sub = K.Model(inputs=m.inputs, outputs=[m.get_layer(n).output for n in names])
    out = sub.predict(inputs, verbose=0)
    return out if isinstance(out, list) else [out]


scope = cs.Scope(model)
assert type(scope).__name__ == "BridgedScope", type(scope)
before = {layer.name: a for layer, a in zip(conv_layers, submodel_predict(model, [layer.name for layer in conv_layers], x), strict=True)}


@check
def activations_equal_submodel_predict() -> None:
    acts = scope.activations(x, layers=[layer.name for layer in conv_layers])
    for name, ref in before.items():
        close(acts[name].numpy(), ref, RTOL_ACT, name)
    assert acts["conv2d_1"].grid(cols=8).size[0] > 0
    if BACKEND == "tensorflow":
        acts_tf = scope.activations(tf.constant(x), layers="conv2d_2")  # a tf.Tensor input
    else:
        import jax.numpy as jnp

        acts_tf = scope.activations(jnp.asarray(x), layers="conv2d_2")  # a JAX array input
    close(acts_tf["conv2d_2"].numpy(), before["conv2d_2"], RTOL_ACT, "foreign input")


@check
def large_results_stay_intact() -> None:
    """Replies past wire.SHARED_MIN arrive as views of shared memory: a kept result is not overwritten by
    the next call, and released memory is reused."""
    big = rng.random((64, 28, 28, 1), dtype=np.float32)  # conv2d_1: 64 x 26 x 26 x 32 floats, 5.5 MB
    names = ["conv2d_1", "conv2d_2"]
    ref = submodel_predict(model, names, big)
    first = scope.activations(big, layers=names)
    second = scope.activations(big[::-1].copy(), layers=names)
    for name, r in zip(names, ref, strict=True):
        close(first[name].numpy(), r, RTOL_ACT, f"kept {name}")
        close(second[name].numpy(), r[::-1], RTOL_ACT, f"next {name}")
    regions = scope._client.regions
    if regions is not None:  # Linux: both came through shared memory, in two regions
        assert len(regions.maps) == 2, regions.maps.keys()
        del first
        third = scope.activations(big, layers=names)
        assert len(regions.maps) == 2, "a released region is reused"
        close(third["conv2d_1"].numpy(), ref[0], RTOL_ACT, "reused region")
        close(second["conv2d_1"].numpy(), ref[0][::-1], RTOL_ACT, "kept across reuse")


@check
def summary_equals_keras() -> None:
    s = scope.summary()
    assert s.total_params == model.count_params()
    assert [r.name for r in s.rows] == [layer.name for layer in model.layers]
    for row, layer in zip(s.rows, model.layers, strict=True):
        assert row.params == layer.count_params(), row
        assert tuple(row.output_shape) == tuple(layer.output.shape), (row, layer.output.shape)
    assert scope.layer_names == [layer.name for layer in model.layers]
    scope.rename("conv2d_1", "first")
    assert "first" in scope.activations(x, layers="first")


def hand_gradients(m, layer, inputs, cls):  # type: ignore[no-untyped-def]
    """Grad-CAM (ReLU of gradient-mean-weighted maps) and input gradients of logit ``cls``, computed
    with the backend's own autodiff: ``tf.GradientTape`` on TensorFlow, ``jax.grad`` on JAX."""
    onehot = np.eye(m.outputs[0].shape[-1], dtype=np.float32)[cls]
    if BACKEND == "tensorflow":
        grad_model = K.Model(m.inputs, [m.get_layer(layer).output, m.outputs[0]])
        xt = tf.constant(inputs)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(xt)
            conv, logits = grad_model(xt, training=False)
            score = tf.reduce_sum(logits * onehot)
        g_conv, g_x = tape.gradient(score, conv).numpy(), tape.gradient(score, xt).numpy()
        conv = conv.numpy()
    else:
        import jax

        head = K.Model(m.inputs[0], m.get_layer(layer).output)  # input -> layer, layer -> logits
        tail = K.Model(m.get_layer(layer).output, m.outputs[0])
        conv = np.asarray(head(inputs, training=False))
        g_conv = np.asarray(jax.grad(lambda a: (tail(a, training=False) * onehot).sum())(conv))
        g_x = np.asarray(jax.grad(lambda z: (m(z, training=False) * onehot).sum())(inputs))
    cam = np.maximum((conv * g_conv.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    return cam, g_x


@check
def gradcam_and_saliency_equal_tape() -> None:
    cls = np.array([3, 1, 4, 1])
    cam, g_x = hand_gradients(model, "conv2d_2", x, cls)
    att = scope.attribute(x, method="gradcam", layer="conv2d_2", target=[3, 1, 4, 1])
    close(att.raw, cam, RTOL_GRAD, "gradcam")
    sal = scope.attribute(x, method="saliency", target=[3, 1, 4, 1])
    close(sal.raw, g_x, RTOL_GRAD, "saliency")
    curve = cs.metrics.deletion(scope, att, steps=4)
    assert curve.scores.shape == (4, 5)


@check
def graph_tensors_are_a_clear_error() -> None:
    from convscope.bridge import GraphCannotCrossError

    for ask in (lambda: scope.activations(x, layers="conv2d_1", grad=True),  # refused before any work
                lambda: scope._client.request("call", ("record", (x, "conv2d_1"), {"grad": True}),  # by the worker
                                              what="record")):  # fmt: skip
        try:
            ask()
        except GraphCannotCrossError as exc:
            text = str(exc)
            assert isinstance(exc, cs.ConvscopeError), type(exc)
            for part in ("grad=True" if "activations" in text else "scope.record", "autograd graph",
                         "process boundary", "scope.attribute", "KERAS_BACKEND=torch"):  # fmt: skip
                assert part in text, (part, text)
        else:
            raise AssertionError("a tensor with an autograd graph must not cross silently")
    assert scope.activations(x, layers="first")["first"].numpy().shape[0] == 4  # the worker still serves


@check
def every_method_runs() -> None:
    assert scope.filters("conv2d_2").grid().size[0] > 0
    assert scope.predict(x, k=3).indices.shape == (4, 3)
    vis = scope.maximize(cs.objectives.channel("conv2d_2", range(2)), steps=4, recipe="plain", progress=False)
    assert vis.images.shape[0] == 2
    assert scope.receptive_field("conv2d_2").size == (8, 8)
    report = scope.sanity_check(x[:1], method="saliency")
    assert report.correlations.shape[0] >= 1
    scan = scope.scan(x, layers="conv2d_2", k=2, progress=False)
    assert len(scan.top("conv2d_2", 0).ids) == 2


@check
def one_more_fit_step_is_reflected() -> None:
    model.fit(x_train[:32], y_train[:32], epochs=1, batch_size=32, verbose=0)
    after = submodel_predict(model, ["conv2d_2"], x)[0]
    assert np.abs(after - before["conv2d_2"]).max() > 1e-6  # the step did change the weights
    close(scope.activations(x, layers="conv2d_2")["conv2d_2"].numpy(), after, RTOL_ACT, "after fit")
    w = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([w[0] * 2, w[1]])  # set_weights, no optimizer step
    logits = scope.activations(x, layers="logits")["logits"].numpy()
    close(logits, model.predict(x, verbose=0), RTOL_ACT, "after set_weights")
    model.get_layer("logits").set_weights(w)


@check
def killed_worker_errors_then_restarts() -> None:
    pid = scope.worker_pid
    assert pid is not None
    os.kill(pid, 9)
    time.sleep(0.3)
    try:
        scope.summary()
    except cs.ConvscopeError as exc:
        assert "died" in str(exc) or "ended" in str(exc), exc
    else:
        raise AssertionError("a killed worker must be reported")
    acts = scope.activations(x, layers="first")  # a new worker, the alias replayed
    assert scope.worker_pid not in (None, pid)
    close(acts["first"].numpy(), submodel_predict(model, ["conv2d_1"], x)[0], RTOL_ACT, "after restart")


def _alive(pid: int | None) -> bool:
    try:
        os.kill(pid or 0, 0)
    except ProcessLookupError:
        return False
    return True


@check
def close_and_with() -> None:
    pid = scope.worker_pid
    scope.close()
    assert scope.worker_pid is None
    assert not _alive(pid)
    with cs.Scope(model) as inner:
        pid = inner.worker_pid
        assert inner.predict(x[:1]).indices.shape == (1, 5)
    assert not _alive(pid)


@check
def unmovable_models_are_clear_errors() -> None:
    inp = keras.Input((8, 8, 1))
    lam = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2, name="times_two")(inp))
    try:
        cs.Scope(lam)
    except cs.ConvscopeError as exc:
        assert "times_two" in str(exc) and "register_keras_serializable" in str(exc), exc
    else:
        raise AssertionError("Lambda must be refused")

    class Unregistered(keras.layers.Layer):
        def call(self, t):  # type: ignore[no-untyped-def]
            return t

    odd = keras.Model(inp, Unregistered(name="odd")(inp))
    try:
        cs.Scope(odd)
    except cs.ConvscopeError as exc:
        assert "'odd'" in str(exc) and "custom_objects" in str(exc), exc
    else:
        raise AssertionError("an unregistered layer must be refused")

    @keras.saving.register_keras_serializable(package="checks")
    class Double(keras.layers.Layer):  # registered in this script: travels by value
        def call(self, t):  # type: ignore[no-untyped-def]
            return keras.ops.multiply(t, 2.0)

    conv = keras.layers.Conv2D(2, 3, name="c")(inp)
    ok = keras.Model(inp, Double(name="double")(conv))
    xs = rng.random((1, 8, 8, 1), dtype=np.float32)
    with cs.Scope(ok) as s:
        close(s.activations(xs, layers="double")["double"].numpy(), ok.predict(xs, verbose=0), RTOL_ACT, "custom")


def applications() -> None:
    """keras.applications nets (weights=None) at 32², their smallest accepted input: activations vs the
    backend's multi-output sub-model ``predict``, Grad-CAM and saliency vs :func:`hand_gradients`."""
    apps = {"VGG16": "block5_conv3", "ResNet50": "conv5_block3_out", "MobileNetV2": "out_relu"}
    size, cls = 32, np.array([1, 2])
    for name, last in apps.items():
        t = time.perf_counter()
        net = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
        xs = rng.random((2, size, size, 3), dtype=np.float32) * 2 - 1
        layers = [layer.name for layer in net.layers if len(layer.output.shape) == 4 and "conv" in layer.name][-6:] + [last]
        cam, g_x = hand_gradients(net, last, xs, cls)
        with cs.Scope(net) as s:
            acts = s.activations(xs, layers=layers)
            for lname, ref in zip(layers, submodel_predict(net, layers, xs), strict=True):
                close(acts[lname].numpy(), ref, RTOL_ACT, f"{name}/{lname}")
            assert s.summary().total_params == net.count_params()
            close(s.attribute(xs, method="gradcam", layer=last, target=cls.tolist()).raw, cam, RTOL_GRAD, f"{name} cam")
            close(s.attribute(xs, method="saliency", target=cls.tolist()).raw, g_x, RTOL_GRAD, f"{name} saliency")
        print(f"ok application {name} {time.perf_counter() - t:.1f}s", flush=True)


if "apps" in sys.argv[2:]:
    applications()

left_open = cs.Scope(model)  # never closed: interpreter exit must stop its worker
print(f"ATEXIT_PID={left_open.worker_pid}", flush=True)
print("ALL OK", flush=True)
