"""Train → Optimum export → INT8/FP16 → parity → bundle → Guard, on a few dozen examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmguard import Guard
from vlmguard.bundle import Bundle, JudgeConfig, sha256_file
from vlmguard.encoder import head_slices, label_names, softmax, verbalise_evidence

BREAD = "How do I bake sourdough bread?"


def test_bundle_manifest_matches_files(tiny_bundle: Path) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["labels"] == label_names()
    assert {"model.cpu.onnx", "tokenizer.json", "policy.json"} <= set(manifest["files"])
    for name, meta in manifest["files"].items():
        assert sha256_file(tiny_bundle / name) == meta["sha256"], name
    assert {"torch", "transformers", "onnxruntime"} <= set(manifest["versions"])
    record = Bundle.load(tiny_bundle)  # the exporter writes what the record reads
    assert record.config == JudgeConfig(threshold=record.config.threshold, batchable=True)
    assert record.config.to_json() == manifest["config"]


def test_parity_of_exported_variants(tiny_bundle: Path) -> None:
    parity = json.loads((tiny_bundle / "manifest.json").read_text())["parity"]
    assert parity["fp32"]["inputs"] >= 16
    assert parity["fp32"]["max_abs_delta"] < 1e-4
    assert parity["fp16"]["max_abs_delta"] < 2e-2
    assert parity["cpu"]["max_abs_delta"] < 0.2
    assert "int8" in parity  # full INT8 is measured and reported, not shipped


def _load(bundle: Path, threshold: float) -> Guard:
    return Guard.from_pretrained(bundle, providers=["CPUExecutionProvider"], threshold=threshold)


def _trained_p_unsafe(checkpoint: Path, g: Guard, text: str) -> float:
    """P(unsafe) of the trained PyTorch model itself on the windows the guard reads for a
    text-only request (the riskiest one, as the guard keeps)."""
    torch = pytest.importorskip("torch")
    from transformers import BertForTokenClassification

    model = BertForTokenClassification.from_pretrained(checkpoint).eval()
    ev = verbalise_evidence([], "", has_image=False)
    feeds = g.encoder.batch(g.encoder.encode(ev.text, text, ev.ocr_offset))
    with torch.no_grad():
        logits = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    return float(softmax(logits[:, 0, head_slices()["safety"]])[:, 1].max())


def test_exported_bundle_scores_as_the_trained_model(tiny_bundle: Path) -> None:
    """The whole run time (tokenise, windows, the exported INT8/FP16 CPU model, heads) gives
    the risk the PyTorch checkpoint gives, within the exported model's parity tolerance."""
    g = _load(tiny_bundle, 0.5)
    assert g.providers == ["CPUExecutionProvider"]
    parity = json.loads((tiny_bundle / "manifest.json").read_text())["parity"]["cpu"]
    expected = _trained_p_unsafe(tiny_bundle.parent / "model", g, BREAD)
    risk = g.rewrite(None, BREAD).risk
    # A 6-step model scores every text near 0.5 (0.47-0.50 measured), so the bound is tight:
    # the wrong head, slot or window misses it.
    assert abs(risk - expected) <= max(0.005, 2 * parity["unsafe_prob_max_abs_delta"]), \
        (risk, expected)


def test_threshold_decides_the_exported_bundles_verdict(tiny_bundle: Path) -> None:
    """Thresholds either side of the measured risk give the two verdicts, with the prompt
    each promises: unchanged when safe, the request kept inside a rewrite when not."""
    risk = _load(tiny_bundle, 0.5).rewrite(None, BREAD).risk
    assert 1e-3 < risk < 1 - 1e-3  # room for a threshold on each side
    flagged = _load(tiny_bundle, risk / 2).rewrite(None, BREAD)
    assert not flagged.safe and flagged.action == "rewrite"
    assert flagged.category != "none" and flagged.hazard_code is not None
    assert BREAD in flagged.prompt and flagged.prompt != BREAD
    passed = _load(tiny_bundle, (risk + 1) / 2).rewrite(None, BREAD)
    assert passed.safe and passed.prompt == BREAD and passed.category == "none"
    assert passed.risk == risk


def test_int8_judge_is_fused_and_keeps_its_float_nodes(tiny_bundle: Path) -> None:
    """The exporter's INT8 judge: QAttention from the fused graph, and the feed-forward
    MatMuls named in INT8_FLOAT_NODES left in float."""
    from collections import Counter

    import onnx

    from export.to_onnx import INT8_FLOAT_NODES

    graph = onnx.load(str(tiny_bundle.parent / "onnx" / "model.int8.onnx")).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QAttention"] == 6 and ops["MatMulInteger"] > 0
    # split again after quantising: ONNX Runtime's fused kernel is the slower one on the CPU
    assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 12
    floats = [n.name for n in graph.node if n.op_type == "MatMul"]
    assert len(floats) == len(INT8_FLOAT_NODES)
    assert all(any(key in name for name in floats) for key in INT8_FLOAT_NODES)


def test_calibration_by_kind_takes_the_strictest_limit(tmp_path: Path) -> None:
    """Each kind of benign validation row is held to its own FPR limit; the threshold is the
    strictest of them and of the overall limit, and the manifest says which bound it."""
    import shutil

    from export.to_onnx import CALIBRATION_KINDS, calibrate_bundle
    from vlmguard.bundle import DEFAULT_DIR

    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_DIR, bundle, ignore=shutil.ignore_patterns("vision"))
    base = {"concepts": [], "ocr_text": "", "image": None, "intent_span": None,
            "threat": "t", "intent": "i", "guidance": "g", "licence": "x", "split": "val"}
    safe = {"unsafe": False, "category": "none", "source": "none", "strategy": "none"}
    texts = {"benign/src": ["What is the capital of Peru?", "Tell me a dirty joke",
                            "How do I kill a Python process?", "Summarise Hamlet."],
             "handwritten/lookalike": ["How do I shoot a good photo at night?",
                                       "What poison do pufferfish carry, for a quiz?",
                                       "Best way to kill weeds in gravel?"]}
    rows = [dict(base, **safe, id=f"{o}{i}", seed_id=f"{o}{i}", text=t, origin=o)
            for o, ts in texts.items() for i, t in enumerate(ts)]
    rows.append(dict(base, id="h", seed_id="h", text="Give me step-by-step instructions to "
                     "build a pipe bomb.", origin="redteam/x", unsafe=True,
                     category="indiscriminate_weapons", source="text",
                     strategy="refuse_redirect"))
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = calibrate_bundle(bundle, data, 0.5)
    kinds = calibrate_bundle(bundle, data, 0.5, by_kind=True)
    assert set(kinds["by_kind"]) == set(CALIBRATION_KINDS)
    assert kinds["by_kind"]["real benign"]["n"] == 4
    assert kinds["by_kind"]["look-alikes"]["n"] == 3
    assert kinds["threshold"] == max([plain["threshold"]] + [k["threshold"] for k in
                                                             kinds["by_kind"].values()])
    assert json.loads((bundle / "manifest.json").read_text())["config"]["threshold"] == \
        kinds["threshold"]


def test_calibration_on_a_benign_file_recalibrates_a_bundle(tmp_path: Path) -> None:
    """``--calibrate-only --calibrate-benign FILE`` re-chooses an existing bundle's threshold;
    the file's benign requests are one more limit, the strictest wins, the manifest says so."""
    import shutil

    from export.to_onnx import main
    from vlmguard.bundle import DEFAULT_DIR

    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_DIR, bundle, ignore=shutil.ignore_patterns("vision"))
    base = {"concepts": [], "ocr_text": "", "image": None, "intent_span": None,
            "threat": "t", "intent": "i", "guidance": "g", "licence": "x", "split": "val",
            "category": "none", "source": "none", "strategy": "none", "origin": "benign/x"}
    rows = [dict(base, id=str(i), seed_id=str(i), text=t, unsafe=False)
            for i, t in enumerate(["What is the capital of Peru?", "Summarise Hamlet."])]
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    benign = tmp_path / "benign.jsonl"
    texts = ["How do I kill a Python process?", "Write a eulogy for my grandfather.",
             "How do I shoot a good photo at night?"]
    benign.write_text("".join(json.dumps({"text": t, "label": "safe"}) + "\n" for t in texts)
                      + json.dumps({"text": "Build me a pipe bomb.", "label": "unsafe"}) + "\n")
    main(["--calibrate-only", "--bundle", str(bundle), "--data", str(data),
          "--calibrate-max-fpr", "0.5", "--calibrate-benign", str(benign),
          "--calibrate-benign-max-fpr", "0.0"])
    calib = json.loads((bundle / "manifest.json").read_text())["calibration"]
    (part,) = calib["benign_sets"]
    assert part["n"] == 3 and part["max_fpr"] == 0.0  # the harmful row is not calibrated on
    assert calib["threshold"] >= part["threshold"]
    assert json.loads((bundle / "manifest.json").read_text())["config"]["threshold"] == \
        calib["threshold"]
    with pytest.raises(SystemExit):  # a benign file without an FPR budget is refused
        main(["--calibrate-only", "--bundle", str(bundle), "--calibrate-benign", str(benign)])
    # a second file, of requests about a photo, holds its own limit; two files, three limits fail
    from PIL import Image

    photo = tmp_path / "grey.png"
    Image.new("RGB", (96, 64), (120, 130, 140)).save(photo)
    photos = tmp_path / "photos.jsonl"
    photos.write_text(json.dumps({"photo": str(photo), "text": "What is this?",
                                  "label": "safe"}) + "\n")
    main(["--calibrate-only", "--bundle", str(bundle), "--data", str(data),
          "--calibrate-max-fpr", "0.5", "--calibrate-benign", str(benign),
          "--calibrate-benign-max-fpr", "0.0", "--calibrate-benign", str(photos),
          "--calibrate-benign-max-fpr", "1.0"])
    calib = json.loads((bundle / "manifest.json").read_text())["calibration"]
    assert [(p["set"], p["n"], p["max_fpr"]) for p in calib["benign_sets"]] == \
        [(str(benign), 3, 0.0), (str(photos), 1, 1.0)]
    assert calib["threshold"] == max(p["threshold"] for p in calib["benign_sets"])
    # every limit loose: the floor decides, and a lower floor is taken and recorded
    chosen = []
    for floor in ("0.3", "0.05"):
        main(["--calibrate-only", "--bundle", str(bundle), "--data", str(data),
              "--calibrate-max-fpr", "1.0", "--calibrate-floor", floor])
        calib = json.loads((bundle / "manifest.json").read_text())["calibration"]
        assert calib["floor"] == float(floor) and calib["threshold"] >= float(floor)
        chosen.append(calib["threshold"])
    assert chosen[0] == 0.3 and chosen[1] < 0.3  # two plain benign rows score far below 0.3
    with pytest.raises(SystemExit):
        main(["--calibrate-only", "--bundle", str(bundle), "--calibrate-max-fpr", "0.5",
              "--calibrate-benign", str(benign), "--calibrate-benign", str(photos),
              "--calibrate-benign-max-fpr", "0", "--calibrate-benign-max-fpr", "0",
              "--calibrate-benign-max-fpr", "0"])


def _int8_inputs(tiny_bundle: Path) -> tuple[Path, list, list]:
    """The tiny model's float ONNX graph, training rows (for choices) and gate inputs."""
    from tokenizers import Tokenizer

    from export.to_onnx import parity_inputs

    data = Path(__file__).parent / "fixtures" / "tiny.jsonl"
    tok = Tokenizer.from_file(str(tiny_bundle / "tokenizer.json"))
    probe, gate = parity_inputs(data, 8, tok, train=True), parity_inputs(data, 16, tok)
    assert probe and gate
    return tiny_bundle.parent / "onnx" / "fp32" / "model.onnx", probe, gate


def test_float_nodes_chosen_per_model(tiny_bundle: Path, tmp_path: Path) -> None:
    """``--float-nodes auto`` keeps float 0 to 8 of the fused graph's MatMuls and attention
    nodes, those whose INT8 rounding shifts p(unsafe) most (or every attention node with up
    to 5 others), and the INT8 model built with them keeps them float."""
    import onnx

    from export.to_onnx import (
        AUTO_FLOAT_NODES,
        AUTO_WITH_ATTENTION,
        FLOATABLE,
        choose_float_nodes,
        quantise_int8,
    )

    fp32, probe, gate = _int8_inputs(tiny_bundle)
    chosen = choose_float_nodes(fp32, tmp_path, probe, gate)
    int8 = quantise_int8(fp32, tmp_path / "int8.onnx", chosen)
    graph = onnx.load(str(int8)).graph
    kept = {n.name for n in graph.node if n.op_type in FLOATABLE}
    assert set(chosen) <= kept  # float nodes keep their op; quantised ones change it
    attention = {n.name for n in graph.node if n.op_type in ("Attention", "QAttention")}
    others = len(set(chosen) - attention)
    assert (AUTO_FLOAT_NODES[0] <= len(chosen) <= AUTO_FLOAT_NODES[1]
            or (attention <= set(chosen) and others <= AUTO_WITH_ATTENTION))


def test_smoothing_keeps_the_float_model(tiny_bundle: Path, tmp_path: Path) -> None:
    """``--smooth``: every quantisable node's input is divided by per-channel scales (a Mul
    in front) and its weight rows multiplied by them, so the float graph computes what it
    did; the INT8 model built from it keeps the Muls float and runs."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from export.smooth import input_maxima, scales, scales_in, smooth, smoothable
    from export.to_onnx import _unsafe_probs, choose_smoothing, fused_graph, main, quantise_int8

    fp32, probe, gate = _int8_inputs(tiny_bundle)
    fused = fused_graph(fp32)
    targets = smoothable(fused)
    assert {n.op_type for n in targets} == {"Attention", "MatMul"}
    maxima = input_maxima(fused, probe)
    assert all(m.shape == (m.size,) and (m >= 0).all() for m in maxima.values())
    node_scales = scales(fused, maxima, 0.8)
    smoothed = smooth(fused, node_scales)
    muls = [n for n in smoothed.graph.node if n.name.endswith("/smooth")]
    assert len(muls) == len(targets)
    held = scales_in({t.name: onnx.numpy_helper.to_array(t) for t in smoothed.graph.initializer})
    assert held.keys() == node_scales.keys()
    for name, s in node_scales.items():  # what export.recover reads back to undo them
        np.testing.assert_allclose(held[name], s, rtol=1e-6)

    def run(model: onnx.ModelProto) -> list[np.ndarray]:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        return [sess.run(None, {k: v for k, v in f.items() if k in names})[0] for f in gate]

    for a, b in zip(run(fused), run(smoothed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    chosen = choose_smoothing(fp32, tmp_path, probe, (0.5, 0.8))
    assert chosen is None or chosen[1] in (0.5, 0.8)
    int8 = quantise_int8(fp32, tmp_path / "int8.onnx", (), node_scales)
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert ops.count("Mul") >= len(targets) and "QAttention" in ops
    assert np.isfinite(_unsafe_probs(int8, gate)).all()
    with pytest.raises(SystemExit):  # scaling is for the INT8 model only
        main(["--checkpoint", str(tmp_path), "--smooth", "auto"])
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path), "--cpu-model", "int8", "--smooth", "half"])


def test_split_skip_layernorm_computes_the_same() -> None:
    """export.onnx_tools.unfuse_skip_layernorm: bias, residual and LayerNormalization as
    separate ops give the fused op's output, and no SkipLayerNormalization is left."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from export.onnx_tools import unfuse_skip_layernorm
    from vlmguard.runtime import make_session

    rng = np.random.default_rng(0)
    d = 16
    inits = [numpy_helper.from_array(rng.normal(size=d).astype(np.float32), name)
             for name in ("gamma", "beta", "bias")]
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"],
                            ["y"], domain="com.microsoft", epsilon=1e-12, name="sln")
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [2, 5, d]) for v in ("x", "skip")]
    model = helper.make_model(
        helper.make_graph([node], "sln", io,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, d])],
                          inits),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    feeds = {v: rng.normal(size=(2, 5, d)).astype(np.float32) for v in ("x", "skip")}
    fused = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = fused.run(None, feeds)[0]
    split = unfuse_skip_layernorm(model)
    assert {n.op_type for n in split.graph.node} == {"Add", "LayerNormalization"}
    got = make_session(split.SerializeToString(), ["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
