"""ONNX TTS graphs whose noise is a pure function of a seed.

VITS graphs (Piper) draw noise with ``RandomNormalLike`` ops from a generator that lives in the
session, so two calls with the same input differ. Each random op is rewritten once (cached in the
cache home, content-addressed by the source model's hash) into a new graph input of noise, cut or
zero-padded to the size the op needs and reshaped to its shape; the graph also outputs that size.
``SeededSession`` feeds the inputs with noise drawn from ``numpy.random.default_rng((seed, call,
op))``. A noise stream's prefix does not depend on its length, so when a call needs more noise than
it was given, it is run again with longer streams: the audio does not depend on how long they were.
A graph with no random op (Kokoro's) runs as it is.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from salad_eval import home

REVISION = 1  # bump when the rewrite changes: part of each engine's version, so of each clip key
_PREFIX = "salad_noise"
_RANDOM = {
    "RandomNormalLike": "normal",
    "RandomUniformLike": "uniform",
    "RandomNormal": "normal",
    "RandomUniform": "uniform",
}
_FLOAT = 1  # onnx.TensorProto.FLOAT


def _affine(kind: str, attrs: dict) -> tuple[float, float]:
    """(scale, offset) that turn a standard draw into the op's distribution."""
    if kind == "normal":
        return attrs.get("scale", 1.0), attrs.get("mean", 0.0)
    low, high = attrs.get("low", 0.0), attrs.get("high", 1.0)
    return high - low, low


def _rewrite(model):
    """Replace every random op by a noise input; returns the number of ops replaced."""
    from onnx import helper, numpy_helper  # noqa: PLC0415 - deferred: optional onnx, loaded on this path only

    graph, nodes, count = model.graph, [], 0
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs]:
                if any(inner.op_type in _RANDOM for inner in sub.node):
                    raise ValueError(f"a random op inside the subgraph of {node.name}")
        kind = _RANDOM.get(node.op_type)
        if kind is None:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("dtype", _FLOAT) != _FLOAT:
            raise ValueError(f"{node.name} draws dtype {attrs['dtype']}; only float is seeded")
        noise, p = f"{_PREFIX}_{count}_{kind}", f"{_PREFIX}_{count}/"
        scale, offset = _affine(kind, attrs)
        constants = {
            "zero": np.array([0], np.int64),
            "scale": np.float32(scale),
            "offset": np.float32(offset),
        }
        if node.op_type.endswith("Like"):
            nodes.append(helper.make_node("Shape", [node.input[0]], [p + "shape"]))
        else:
            constants["shape"] = np.array(attrs["shape"], np.int64)
        graph.initializer.extend(numpy_helper.from_array(v, p + k) for k, v in constants.items())
        nodes += [
            helper.make_node("ReduceProd", [p + "shape"], [p + "size"], keepdims=1),
            helper.make_node("Shape", [noise], [p + "given"]),
            helper.make_node("Sub", [p + "size", p + "given"], [p + "missing"]),
            helper.make_node("Concat", [p + "zero", p + "missing"], [p + "pads"], axis=0),
            helper.make_node("Pad", [noise, p + "pads"], [p + "flat"]),  # cut or zero-padded
            helper.make_node("Reshape", [p + "flat", p + "shape"], [p + "draw"]),
            helper.make_node("Mul", [p + "draw", p + "scale"], [p + "scaled"]),
            helper.make_node("Add", [p + "scaled", p + "offset"], list(node.output)),
        ]
        graph.input.append(helper.make_tensor_value_info(noise, _FLOAT, [f"{noise}_length"]))
        graph.output.append(helper.make_tensor_value_info(p + "size", 7, [1]))  # int64
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def seeded_model(path: str, digest: str) -> str:
    """The model at ``path`` with its random ops as noise inputs (itself if it has none)."""

    def build(tmp: Path) -> dict:
        import onnx  # noqa: PLC0415 - deferred: optional onnx, loaded on this path only

        model = onnx.load(path)
        count = _rewrite(model)
        if count:
            onnx.save(model, tmp / "model.onnx")
        return {"source": path, "random_ops": count}

    entry = home.cached_dir(home.home() / "assets" / "seeded-onnx" / f"{digest}-r{REVISION}", build)
    meta = json.loads((entry / home.COMPLETE).read_text())
    return str(entry / "model.onnx") if meta["random_ops"] else path


class SeededSession:
    """An onnxruntime session whose noise inputs are fed from the seed set by ``seeded(seed)``.

    It stands in for the session a TTS package holds: the noise inputs and size outputs are hidden
    from ``get_inputs``/``get_outputs``/``run``; everything else is the session's own.
    """

    def __init__(self, session) -> None:
        self._session = session
        self._noise = [i.name for i in session.get_inputs() if i.name.startswith(_PREFIX)]
        self._outputs = [o.name for o in session.get_outputs() if not o.name.startswith(_PREFIX)]
        self._sizes = [f"{_PREFIX}_{k}/size" for k in range(len(self._noise))]
        self._length = 1 << 16  # per noise stream; grows on demand, never changes the audio
        self._seed, self._calls = 0, 0

    def __getattr__(self, name: str):
        return getattr(self._session, name)

    def get_inputs(self) -> list:
        return [i for i in self._session.get_inputs() if i.name not in self._noise]

    def get_outputs(self) -> list:
        return [o for o in self._session.get_outputs() if o.name in self._outputs]

    @contextlib.contextmanager
    def seeded(self, seed: int) -> Iterator[None]:
        """Calls inside draw their noise from ``seed`` (the n-th call of a clip from (seed, n))."""
        self._seed, self._calls = seed, 0
        yield

    def _draw(self, call: int) -> dict[str, np.ndarray]:
        noise = {}
        for k, name in enumerate(self._noise):
            rng = np.random.default_rng((self._seed, call, k))
            if name.endswith("_normal"):
                noise[name] = rng.standard_normal(self._length, dtype=np.float32)
            else:
                noise[name] = rng.random(self._length, dtype=np.float32)
        return noise

    def run(self, output_names, feed: dict, run_options=None) -> list:
        names = list(output_names or self._outputs)
        call, self._calls = self._calls, self._calls + 1
        while True:
            results = self._session.run(
                [*names, *self._sizes], {**feed, **self._draw(call)}, run_options
            )
            needed = max((int(size[0]) for size in results[len(names) :]), default=0)
            if needed <= self._length:
                return results[: len(names)]
            self._length = 1 << (needed - 1).bit_length()
