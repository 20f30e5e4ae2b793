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
