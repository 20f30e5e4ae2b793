"""ONNX graph helpers shared by the export scripts."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def fp16_storage(src: Path, dst: Path, min_elems: int = 1024) -> None:
    """Store big fp32 weights as fp16 behind Cast nodes; ORT folds the Casts at load time."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    inits, casts = [], []
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        if t.data_type == TensorProto.FLOAT and a.size >= min_elems:
            h = numpy_helper.from_array(a.astype(np.float16), t.name + "__fp16")
            inits.append(h)
            casts.append(helper.make_node("Cast", [h.name], [t.name], to=TensorProto.FLOAT,
                                          name=t.name + "__cast"))
        else:
            inits.append(t)
    nodes = list(g.node)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.node[:]
    g.node.extend(casts + nodes)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))


def unfuse_skip_layernorm(model):
    """Each SkipLayerNormalization as Add (its bias), Add (the residual) and LayerNormalization.

    ONNX Runtime's transformer optimiser fuses them so that the quantiser finds its patterns,
    but the fused op's CPU kernel is the slower one: on a 2-core Xeon (onnxruntime 1.32),
    the bundled judge ran 2.48 -> 2.09 ms on 16-token windows and 9.48 -> 8.25 ms on 128
    unfused. The runtime keeps ONNX Runtime from fusing them back on the CPU
    (``vlmguard.runtime.CPU_DISABLED_FUSIONS``). Returns ``model``, changed in place.
    """
    from onnx import helper

    nodes = []
    for n in model.graph.node:
        if n.op_type != "SkipLayerNormalization":
            nodes.append(n)
            continue
        if len([o for o in n.output if o]) != 1:  # mean / inv-std / sum outputs are unused here
            raise ValueError(f"{n.name}: a SkipLayerNormalization with several outputs")
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-12)
        x = n.input[0]
        if len(n.input) > 4 and n.input[4]:
            nodes.append(helper.make_node("Add", [x, n.input[4]], [f"{n.name}/biased"],
                                          name=f"{n.name}/bias"))
            x = f"{n.name}/biased"
        nodes.append(helper.make_node("Add", [x, n.input[1]], [f"{n.name}/residual"],
                                      name=f"{n.name}/residual"))
        nodes.append(helper.make_node("LayerNormalization",
                                      [f"{n.name}/residual", n.input[2], n.input[3]],
                                      [n.output[0]], name=n.name, axis=-1, epsilon=eps))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain in ("", "ai.onnx") and o.version >= 17 for o in model.opset_import):
        raise ValueError("LayerNormalization needs opset 17; the graph imports an older one")
    return model
