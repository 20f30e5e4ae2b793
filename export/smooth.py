"""Per-channel input scales before dynamic INT8 (SmoothQuant), so the judge quantises whole.

Why: dynamic INT8 gives each quantised node one activation scale per call, and BERT's
activations carry a few channels 10-15x their median (measured on round l's judge), which
take most of that scale's 8 bits. Dividing input channel j by s_j and multiplying weight row
j by s_j leaves the float product unchanged, ``x W = (x / s) (s W)``, and moves the outliers
into the weights, which are quantised per output column. With
``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)`` (Xiao et al., 2023) round l's first candidate
went from 9 verdict flips in 512 with every node INT8 to 1 (``training/RUNS.md``, stop 31).

In post-LayerNorm BERT the normalised output also feeds the residual, so ``1 / s`` cannot
be folded into the LayerNorm as in pre-LayerNorm models: an elementwise Mul is inserted in
front of each smoothed node instead (a few microseconds a call).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

SMOOTHABLE = ("Attention", "MatMul")
ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)  # --smooth auto: tried in turn, the least harm wins
SCALE_SUFFIX = "/smooth_scale"  # the initializer holding 1 / s in front of a smoothed node


def smoothable(model) -> list:
    """Nodes whose input 0 is an activation and input 1 a 2-D weight: what INT8 quantises."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in SMOOTHABLE and len(n.input) > 1
            and n.input[1] in inits and numpy_helper.to_array(inits[n.input[1]]).ndim == 2]


def input_maxima(model, feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel max |x| of every smoothable node's input over ``feeds``, in float."""
    import onnx
    import onnxruntime as ort

    names = sorted({n.input[0] for n in smoothable(model)})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    top: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, x in zip(names, sess.run(names, {k: v for k, v in feed.items() if k in wanted}),
                           strict=True):
            m = np.abs(x.reshape(-1, x.shape[-1])).max(axis=0)
            top[name] = np.maximum(top[name], m) if name in top else m
    return top


def scales(model, maxima: Mapping[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    """Each smoothable node's input scales, ``max|x_j|^alpha / max|W_j|^(1 - alpha)``,
    normalised to geometric mean 1, by node name."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, np.ndarray] = {}
    for node in smoothable(model):
        w = numpy_helper.to_array(inits[node.input[1]])
        x_max = np.clip(maxima[node.input[0]], 1e-5, None)
        w_max = np.clip(np.abs(w).max(axis=1), 1e-5, None)
        s = x_max**alpha / w_max ** (1 - alpha)
        out[node.name] = (s / np.exp(np.log(s).mean())).astype(np.float32)
    return out


def smooth(model, node_scales: Mapping[str, np.ndarray]):
    """A copy of ``model`` in which each node named in ``node_scales`` has its input divided
    by the scales (a Mul in front) and its weight rows multiplied by them; the float outputs
    are unchanged."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    targets, scaled = {n.name for n in smoothable(out) if n.name}, set()
    nodes = []
    for old in graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(old)
        s = node_scales.get(node.name)
        if s is not None and node.name in targets and node.input[1] not in scaled:
            scaled.add(node.input[1])  # a shared weight is scaled once, for its first node
            w = numpy_helper.to_array(inits[node.input[1]])
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(w * s[:, None], node.input[1]))
            inv = numpy_helper.from_array((1 / s).astype(np.float32),
                                          f"{node.name}{SCALE_SUFFIX}")
            graph.initializer.append(inv)
            nodes.append(onnx.helper.make_node("Mul", [node.input[0], inv.name],
                                               [f"{node.name}/smoothed"],
                                               name=f"{node.name}/smooth"))
            node.input[0] = nodes[-1].output[0]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def scales_in(inits: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The scales a smoothed graph's initializers hold, by the name of the node they scale
    (what :func:`smooth` was given), so ``export.recover`` can undo them."""
    return {name[: -len(SCALE_SUFFIX)]: (1 / v).astype(np.float32)
            for name, v in inits.items() if name.endswith(SCALE_SUFFIX)}
