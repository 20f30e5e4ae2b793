"""Every way a bundle can be broken gives ModelLoadError, and a modified file never loads."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from vlmguard import Guard, ModelLoadError
from vlmguard.bundle import (
    DEFAULT_DIR,
    DEFAULT_VISION_DIR,
    DET_LIMIT_SIDE,
    Bundle,
    JudgeConfig,
    hash_files,
    judge_manifest,
    sha256_file,
    write_manifest,
)
from vlmguard.vision import OCR, Tagger

SMALL = ("manifest.json", "policy.json", "tokenizer.json")


def _copy_bundle(dst: Path, copy_model: bool = False, copy_vision: bool = False) -> Path:
    """A bundle in ``dst``: small files copied, big ones linked unless asked for a copy."""
    dst.mkdir()
    for p in DEFAULT_DIR.iterdir():
        if p.is_file():
            if p.name in SMALL or (copy_model and p.suffix == ".onnx"):
                shutil.copy2(p, dst / p.name)
            else:
                (dst / p.name).symlink_to(p)
    vis = dst / "vision"
    vis.mkdir()
    for p in (DEFAULT_DIR / "vision").iterdir():
        if copy_vision or p.name == "manifest.json" or p.suffix == ".txt":
            shutil.copy2(p, vis / p.name)
        else:
            (vis / p.name).symlink_to(p)
    return dst


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path: Path, data: object) -> None:
    (path / "manifest.json").write_text(json.dumps(data))


def _rehash(path: Path, name: str) -> None:
    """Make the manifest agree with a file we changed on purpose (a 'valid' bad file)."""
    m = _manifest(path)
    data = (path / name).read_bytes()
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    _write_manifest(path, m)


def _load(path: Path) -> Guard:
    return Guard.from_pretrained(path, providers=["CPUExecutionProvider"])


def test_an_intact_copy_loads(tmp_path: Path) -> None:
    """The fixture itself is sound, so every failure below is the one we caused."""
    g = _load(_copy_bundle(tmp_path / "b"))
    assert g.rewrite(None, "How do I bake bread?").safe


@pytest.mark.parametrize("where", [0.10, 0.30])
def test_overwritten_model_is_refused(tmp_path: Path, where: float) -> None:
    b = _copy_bundle(tmp_path / "b", copy_model=True)
    model = b / "model.cpu.onnx"
    data = bytearray(model.read_bytes())
    at = int(len(data) * where)
    data[at:at + 65536] = bytes(65536)
    model.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        _load(b)


def _edit(name: str, fn: Callable[[Path], None]) -> tuple[str, Callable[[Path], None]]:
    return name, fn


BREAKAGES = [
    _edit("no manifest", lambda b: (b / "manifest.json").unlink()),
    _edit("manifest not json", lambda b: (b / "manifest.json").write_text("{not json")),
    _edit("manifest not utf-8", lambda b: (b / "manifest.json").write_bytes(b"\xff\xfe{}")),
    _edit("manifest is a list", lambda b: _write_manifest(b, [1, 2])),
    _edit("manifest without files", lambda b: _write_manifest(
        b, {k: v for k, v in _manifest(b).items() if k != "files"})),
    _edit("files entry without hash", lambda b: _write_manifest(
        b, {**_manifest(b), "files": {**_manifest(b)["files"], "tokenizer.json": {}}})),
    _edit("config not an object", lambda b: _write_manifest(b, {**_manifest(b), "config": 3})),
    _edit("config threshold not a number", lambda b: _write_manifest(
        b, {**_manifest(b), "config": {**_manifest(b)["config"], "threshold": "high"}})),
    _edit("labels changed", lambda b: _write_manifest(b, {**_manifest(b), "labels": ["x"]})),
    _edit("tokenizer missing", lambda b: (b / "tokenizer.json").unlink()),
    _edit("tokenizer corrupt", lambda b: (b / "tokenizer.json").write_text("{}")),
    _edit("tokenizer truncated", lambda b: (b / "tokenizer.json").write_bytes(
        (b / "tokenizer.json").read_bytes()[:1000])),
    _edit("tokenizer invalid but hashed", lambda b: (
        (b / "tokenizer.json").write_text('{"model": 5}'), _rehash(b, "tokenizer.json"))),
    _edit("policy invalid but hashed", lambda b: (
        (b / "policy.json").write_text("[1]"), _rehash(b, "policy.json"))),
    _edit("policy not json but hashed", lambda b: (
        (b / "policy.json").write_text("{"), _rehash(b, "policy.json"))),
    _edit("model missing", lambda b: (b / "model.cpu.onnx").unlink()),
    _edit("model not listed", lambda b: _write_manifest(b, {**_manifest(b), "files": {
        k: v for k, v in _manifest(b)["files"].items() if k != "model.cpu.onnx"}})),
    _edit("model name escapes the bundle", lambda b: _write_manifest(b, {
        **_manifest(b), "config": {**_manifest(b)["config"], "model_cpu": "../x.onnx"}})),
    _edit("model size wrong", lambda b: _write_manifest(b, {**_manifest(b), "files": {
        **_manifest(b)["files"], "model.cpu.onnx": {
            **_manifest(b)["files"]["model.cpu.onnx"], "bytes": 12}}})),
    _edit("vision manifest missing", lambda b: (b / "vision" / "manifest.json").unlink()),
    _edit("vision manifest not json", lambda b: (b / "vision" / "manifest.json").write_text(
        "]")),
    _edit("vision labels changed", lambda b: (b / "vision" / "imagenet_labels.txt").write_text(
        "cat\n")),
    _edit("ocr dictionary missing", lambda b: (b / "vision" / "ocr_keys.txt").unlink()),
    _edit("tagger entry malformed", lambda b: _write_manifest(
        b / "vision", {**_manifest(b / "vision"), "tagger": {"input": {"shape": 7}}})),
    # stop 34: these loaded, then failed every request (or read nothing)
    _edit("det_limit_side out of range", lambda b: _write_manifest(
        b, {**_manifest(b), "config": {**_manifest(b)["config"], "det_limit_side": 0}})),
    _edit("text gate out of range", lambda b: _write_manifest(b / "vision", {
        **_manifest(b / "vision"), "ocr": {**_manifest(b / "vision")["ocr"],
                                           "text_gate": {"threshold": 5.0}}})),
    # stop 35: these loaded too, then failed closed on every request
    _edit("window too short for the evidence", lambda b: _write_manifest(
        b, {**_manifest(b), "config": {**_manifest(b)["config"], "max_tokens": 16}})),
    _edit("window longer than the judge's positions", lambda b: _write_manifest(
        b, {**_manifest(b), "config": {**_manifest(b)["config"], "max_tokens": 600}})),
    _edit("ocr dictionary empty, hashed", lambda b: (
        (b / "vision" / "ocr_keys.txt").write_text(""), _rehash(b / "vision", "ocr_keys.txt"))),
    _edit("ocr dictionary one line short, hashed", lambda b: (
        (b / "vision" / "ocr_keys.txt").write_text(
            (b / "vision" / "ocr_keys.txt").read_text().split("\n", 1)[1]),
        _rehash(b / "vision", "ocr_keys.txt"))),
    _edit("another model in the judge's place, hashed", lambda b: (
        (b / "model.cpu.onnx").unlink(),
        shutil.copy2(DEFAULT_DIR / "precedent" / "encoder.onnx", b / "model.cpu.onnx"),
        _rehash(b, "model.cpu.onnx"))),
]


def _vision(fn: Callable[[dict], object]) -> Callable[[Path], None]:
    """An edit of the vision manifest (hashes unchanged: the files stay as shipped)."""
    def edit(b: Path) -> None:
        m = _manifest(b / "vision")
        fn(m)
        _write_manifest(b / "vision", m)
    return edit


BREAKAGES += [
    # s36 audit L7: bool("false") is True
    _edit("batchable a string", lambda b: _write_manifest(
        b, {**_manifest(b), "config": {**_manifest(b)["config"], "batchable": "false"}})),
    _edit("batchable a number", lambda b: _write_manifest(
        b, {**_manifest(b), "config": {**_manifest(b)["config"], "batchable": 1}})),
    # s36 audit M5: these loaded, then answered garbage or failed every image request
    _edit("tagger mean huge", _vision(lambda m: m["tagger"]["input"].__setitem__(
        "mean", [1e30, 0.5, 0.5]))),
    _edit("tagger mean NaN", _vision(lambda m: m["tagger"]["input"].__setitem__(
        "mean", [float("nan"), 0.5, 0.5]))),
    _edit("tagger labels are the ocr dictionary", _vision(
        lambda m: m["tagger"].__setitem__("labels", "ocr_keys.txt"))),
    _edit("tagger input size wrong", _vision(lambda m: m["tagger"]["input"].__setitem__(
        "shape", ["batch", 3, 300, 300]))),
    _edit("ocr recogniser is the detector", _vision(
        lambda m: m["ocr"]["rec"].__setitem__("file", "ocr_det.onnx"))),
    _edit("ocr detector is the recogniser", _vision(
        lambda m: m["ocr"]["det"].__setitem__("file", "ocr_rec.onnx"))),
    _edit("ocr angle classifier is the detector", _vision(
        lambda m: m["ocr"]["cls"].__setitem__("file", "ocr_det.onnx"))),
]


@pytest.mark.parametrize("name, breakage", BREAKAGES, ids=[n for n, _ in BREAKAGES])
def test_every_broken_bundle_raises_model_load_error(tmp_path: Path, name: str,
                                                     breakage: Callable[[Path], None]) -> None:
    b = _copy_bundle(tmp_path / "b")
    breakage(b)
    with pytest.raises(ModelLoadError):
        _load(b)


@pytest.mark.parametrize("victim", ["tagger.onnx", "ocr_det.onnx", "ocr_rec.onnx"])
def test_modified_vision_model_is_refused(tmp_path: Path, victim: str) -> None:
    b = _copy_bundle(tmp_path / "b", copy_vision=True)
    p = b / "vision" / victim
    data = bytearray(p.read_bytes())
    data[len(data) // 3] ^= 0x40  # a single flipped bit
    p.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        _load(b)
    cls = Tagger if victim == "tagger.onnx" else OCR
    with pytest.raises(ModelLoadError, match="sha256"):
        cls(b / "vision")


def test_every_shipped_file_is_covered_by_its_manifest() -> None:
    """export/ writes hashes; the guard can only verify what the manifest lists."""
    for d in (DEFAULT_DIR, DEFAULT_DIR / "vision"):
        listed = set(_manifest(d)["files"])
        loaded = {p.name for p in d.iterdir() if p.is_file()
                  and p.suffix in (".onnx", ".json", ".txt") and p.name != "manifest.json"}
        assert loaded <= listed, f"{d}: {sorted(loaded - listed)} not in the manifest"


# ---- the typed record ------------------------------------------------------------------------
def test_shipped_manifests_load_as_records() -> None:
    """The manifests on disk (and so those the current exporter writes) load unchanged."""
    judge = Bundle.load(DEFAULT_DIR)
    raw = _manifest(DEFAULT_DIR)
    assert judge.config.to_json() == raw["config"]
    assert judge.labels == raw["labels"] and judge.name == raw["name"]
    assert {n: e.to_json() for n, e in judge.files.items()} == raw["files"]
    assert judge.vision_dir() == DEFAULT_VISION_DIR
    vision = Bundle.load(DEFAULT_VISION_DIR)
    assert vision.config == JudgeConfig()  # no config section: the defaults
    tagger, ocr = vision.tagger(), vision.ocr()
    assert (tagger.file, tagger.labels, tagger.size) == ("tagger.onnx", "imagenet_labels.txt", 224)
    assert (ocr.det_file, ocr.rec_file, ocr.keys_file) == (
        "ocr_det.onnx", "ocr_rec.onnx", "ocr_keys.txt")
    assert ocr.gate_scale is None and ocr.gate_threshold is None


def test_written_manifest_keeps_the_format_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / "model.cpu.onnx").write_bytes(b"model")
    (tmp_path / "tokenizer.json").write_text("{}")
    config = JudgeConfig(threshold=0.7, batchable=True)
    manifest = judge_manifest(name="m", labels=["a"], config=config,
                              files=hash_files(tmp_path, ["tokenizer.json", "model.cpu.onnx"]),
                              training={"epochs": 1}, created="2026-01-01")
    write_manifest(tmp_path, manifest)
    raw = _manifest(tmp_path)
    # the keys and their order are those every exporter so far has written
    assert list(raw) == ["name", "format", "labels", "config", "files", "training", "created"]
    assert list(raw["config"]) == ["threshold", "max_tokens", "model_cpu", "model_gpu",
                                   "batchable", "det_limit_side"]
    assert raw["files"]["model.cpu.onnx"] == {
        "sha256": hashlib.sha256(b"model").hexdigest(), "bytes": 5}
    loaded = Bundle.load(tmp_path)
    assert loaded.config == config and loaded.manifest["training"] == {"epochs": 1}
    assert loaded.read("model.cpu.onnx") == b"model"
    assert sha256_file(tmp_path / "model.cpu.onnx") == loaded.files["model.cpu.onnx"].sha256


def test_missing_config_fields_take_the_record_defaults(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    _write_manifest(tmp_path, {"files": {"f": {"sha256": hashlib.sha256(b"x").hexdigest()}}})
    b = Bundle.load(tmp_path)
    assert b.config == JudgeConfig() and b.config.det_limit_side == DET_LIMIT_SIDE
    assert b.files["f"].bytes is None and b.read("f") == b"x"
    assert b.labels is None and b.name == tmp_path.name


def test_a_file_bigger_than_listed_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """s36 audit M4: a 3 GB file in tokenizer.json's place was read whole (14 s, +3 GB)
    before its size was compared with the manifest's."""
    import tracemalloc

    b = _copy_bundle(tmp_path / "b")
    tok = b / "tokenizer.json"
    tok.unlink()
    with tok.open("wb") as f:
        f.truncate(256 * 1024 * 1024)  # sparse: no disk used
    record = Bundle.load(b)
    tracemalloc.start()
    try:
        with pytest.raises(ModelLoadError, match="manifest says"):
            record.read("tokenizer.json")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    """A FIFO or a directory in a listed file's place is refused, not waited on or read."""
    import os

    b = _copy_bundle(tmp_path / "b")
    (b / "policy.json").unlink()
    os.mkfifo(b / "policy.json")
    (b / "tokenizer.json").unlink()
    (b / "tokenizer.json").mkdir()
    record = Bundle.load(b)
    for name in ("policy.json", "tokenizer.json"):
        with pytest.raises(ModelLoadError, match="not a regular file"):
            record.read(name)


def test_an_oversized_manifest_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    from vlmguard.bundle import MAX_MANIFEST_BYTES

    b = _copy_bundle(tmp_path / "b")
    text = (b / "manifest.json").read_text()
    (b / "manifest.json").write_text(text + " " * MAX_MANIFEST_BYTES)  # still valid JSON
    with pytest.raises(ModelLoadError, match="over"):
        Bundle.load(b)
