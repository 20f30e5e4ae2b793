"""The bundle format: one typed record, read and written here and nowhere else.

A bundle is a directory with a ``manifest.json`` and the files it lists. The judge's bundle
(``models/default``) holds the rewriter model, its tokenizer and policy; its ``vision/``
subdirectory (optional: a bundle without one uses the default) holds the tagger and OCR
models, its ``precedent/`` subdirectory (likewise) the precedent check's encoder and index.
Every manifest shares one shape: ``files`` (each file's sha256 and size) plus the
sections their reader needs (``config`` and ``labels`` for the judge, ``tagger`` and ``ocr``
for vision, ``precedent`` for the precedent check). Every default a reader applies to a
missing field is a field default of :class:`JudgeConfig`, :class:`TaggerSpec`,
:class:`OcrSpec` or :class:`~vlmguard.precedent.PrecedentSpec`. The format only grows:
fields are added, never renamed or removed, so every manifest written so far still loads.

A bundle whose bytes differ from what was exported must never load: a model file overwritten
in place still parses as ONNX and then answers "safe" to everything. So every file the guard
reads is hashed (sha256) and compared with the manifest, and the bytes that were hashed are
the bytes that are used (no second read that could see a different file). A file's size is
compared with the manifest's before it is read, so a huge file in a small one's place costs
nothing, and only regular files are read (a FIFO or a device is refused, not waited on);
``manifest.json`` itself is read only up to :data:`MAX_MANIFEST_BYTES`. Every way a bundle
can be broken (no manifest, a manifest that is not a JSON object, a file missing from the
manifest or the disk, a size or hash mismatch, a malformed section, a file that does not
parse) raises :class:`~vlmguard.errors.ModelLoadError`.

Cost: hashlib's sha256 runs at about 1-2 GB/s on one core, so the ~60 MB default bundle
adds roughly 50-100 ms to a cold start (see the README's cost budget).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .encoder import MAX_TOKENS, MIN_TOKENS
from .errors import ModelLoadError

SCHEMA_VERSION = 1
"""The judge manifest's ``format``. Readers accept manifests without it (vision's has none)."""
MANIFEST = "manifest.json"
DEFAULT_DIR = Path(__file__).resolve().parent / "models" / "default"
"""The judge bundle shipped in the wheel."""
VISION_SUBDIR = "vision"
DEFAULT_VISION_DIR = DEFAULT_DIR / VISION_SUBDIR
"""The vision bundle shipped in the wheel: what a judge bundle without ``vision/`` uses."""
PRECEDENT_SUBDIR = "precedent"
DEFAULT_PRECEDENT_DIR = DEFAULT_DIR / PRECEDENT_SUBDIR
"""The precedent check's bundle shipped in the wheel (:mod:`vlmguard.precedent`): what a
judge bundle without ``precedent/`` uses."""
DET_LIMIT_SIDE = 640
"""OCR detection input: the long side is scaled down to at most this many pixels."""
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""Largest ``manifest.json`` read (the shipped ones are under 10 kB): a bigger one is refused
before it is read or parsed."""
MAX_FILE_BYTES = 2 * 1024 * 1024 * 1024
"""Largest bundle file read (ONNX's protobuf limit): the bound on a file whose manifest entry
gives no size (old manifests); a sized one is read only when it is exactly its size."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MALFORMED = (TypeError, ValueError, IndexError, AttributeError)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class FileEntry:
    """One listed file: its sha256 and (optional in old manifests) its size in bytes."""

    sha256: str
    bytes: int | None = None

    @classmethod
    def of(cls, path: Path) -> FileEntry:
        return cls(sha256_file(path), Path(path).stat().st_size)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256}
        if self.bytes is not None:
            out["bytes"] = self.bytes
        return out


@dataclass(frozen=True)
class JudgeConfig:
    """The judge manifest's ``config``; the defaults apply to fields a manifest leaves out."""

    threshold: float = 0.5
    max_tokens: int = MAX_TOKENS
    model_cpu: str = "model.cpu.onnx"
    model_gpu: str = "model.fp16.onnx"
    batchable: bool = False
    """Whether requests may share a model call. A model with dynamically quantised activations
    uses one scale per call, so padding a batch would change each request's verdict: such a
    model reads one request per call. A manifest that does not say is read the safe way; the
    exporter always says (its weight-only quantised model is batchable)."""
    det_limit_side: int = DET_LIMIT_SIDE

    @classmethod
    def from_json(cls, value: Mapping[str, Any], where: str) -> JudgeConfig:
        d = cls()
        try:
            cfg = cls(threshold=float(value.get("threshold", d.threshold)),
                      max_tokens=int(value.get("max_tokens", d.max_tokens)),
                      model_cpu=str(value.get("model_cpu", d.model_cpu)),
                      model_gpu=str(value.get("model_gpu", d.model_gpu)),
                      batchable=value.get("batchable", d.batchable),
                      det_limit_side=int(value.get("det_limit_side", d.det_limit_side)))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{where}: malformed config: {exc}") from exc
        if not isinstance(cfg.batchable, bool):  # bool("false") is True: batched by mistake
            raise ModelLoadError(f"{where}: config batchable must be true or false, "
                                 f"not {cfg.batchable!r}")
        if not 0.0 < cfg.threshold < 1.0 or not MIN_TOKENS <= cfg.max_tokens <= 4096 \
                or not 32 <= cfg.det_limit_side <= 4096:
            raise ModelLoadError(f"{where}: config out of range (threshold in (0, 1), "
                                 f"max_tokens {MIN_TOKENS}-4096, det_limit_side 32-4096)")
        return cfg

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "max_tokens": self.max_tokens,
                "model_cpu": self.model_cpu, "model_gpu": self.model_gpu,
                "batchable": self.batchable, "det_limit_side": self.det_limit_side}


@dataclass(frozen=True)
class TaggerSpec:
    """The vision manifest's ``tagger``: model and label files, input size, mean and std."""

    file: str = "tagger.onnx"
    labels: str = "imagenet_labels.txt"
    size: int = 224
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    @classmethod
    def from_json(cls, meta: Mapping[str, Any], where: str) -> TaggerSpec:
        d = cls()
        try:
            inp = meta.get("input", {})
            spec = cls(file=str(meta.get("file", d.file)),
                       labels=str(meta.get("labels", d.labels)),
                       size=int(inp.get("shape", [0, 3, d.size, d.size])[2]),
                       mean=tuple(float(v) for v in inp.get("mean", d.mean)),
                       std=tuple(float(v) for v in inp.get("std", d.std)))
        except _MALFORMED as exc:
            raise ModelLoadError(f"{where}: malformed tagger entry: {exc}") from exc
        # mean is a pixel value scaled to [0, 1]; std likewise, and not zero
        if not 16 <= spec.size <= 1024 or len(spec.mean) != 3 or len(spec.std) != 3 \
                or not all(0.0 <= v <= 1.0 for v in spec.mean) \
                or not all(math.isfinite(v) and v != 0 for v in spec.std):
            raise ModelLoadError(f"{where}: unusable tagger input spec (size 16-1024, three "
                                 f"means in [0, 1], three non-zero stds): size {spec.size}, "
                                 f"mean {spec.mean}, std {spec.std}")
        return spec


@dataclass(frozen=True)
class OcrSpec:
    """The vision manifest's ``ocr``: detector, recogniser and dictionary files, the text
    line angle classifier (``None``: the bundle ships none), and the text gate's settings
    where the manifest sets them (``None``: the OCR's own default)."""

    det_file: str = "ocr_det.onnx"
    rec_file: str = "ocr_rec.onnx"
    keys_file: str = "ocr_keys.txt"
    cls_file: str | None = None
    gate_scale: float | None = None
    gate_threshold: float | None = None

    @classmethod
    def from_json(cls, meta: Mapping[str, Any], where: str) -> OcrSpec:
        d = cls()
        try:
            det, rec = meta.get("det", {}), meta.get("rec", {})
            angle = meta.get("cls", {}).get("file")
            gate = meta.get("text_gate", {})
            scale, thresh = gate.get("scale"), gate.get("threshold")
            return cls(det_file=str(det.get("file", d.det_file)),
                       rec_file=str(rec.get("file", d.rec_file)),
                       keys_file=str(rec.get("dict", d.keys_file)),
                       cls_file=None if angle is None else str(angle),
                       gate_scale=None if scale is None else float(scale),
                       gate_threshold=None if thresh is None else float(thresh))
        except _MALFORMED as exc:
            raise ModelLoadError(f"{where}: malformed ocr entry: {exc}") from exc


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its parsed manifest.

    ``manifest`` is the whole manifest as read (training, parity, versions, calibration and
    other sections that no reader needs are kept there); the typed fields are what the
    runtime reads. Sections are parsed when asked for (:attr:`config` at load), so a judge
    bundle needs no tagger entry and a vision bundle no config.
    """

    directory: Path
    files: Mapping[str, FileEntry]
    manifest: Mapping[str, Any] = field(repr=False)
    config: JudgeConfig

    @classmethod
    def load(cls, directory: str | Path) -> Bundle:
        """Read and check ``directory/manifest.json`` (no model file is read yet)."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise ModelLoadError(f"{directory} is not a vlmguard bundle (no manifest.json)")
        try:
            data = json.loads(_read_regular(path, MAX_MANIFEST_BYTES, None).decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path} must hold a JSON object, not {type(data).__name__}")
        files = data.get("files")
        if not isinstance(files, dict) or not files:
            raise ModelLoadError(f"{path} lists no files with their sha256; re-export the bundle")
        entries = {}
        for name, entry in files.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                    and _HEX64.fullmatch(entry["sha256"])):
                raise ModelLoadError(f"{path}: entry for {name!r} has no valid sha256")
            size = entry.get("bytes")
            if "bytes" in entry and (not isinstance(size, int) or isinstance(size, bool)):
                raise ModelLoadError(f"{path}: entry for {name!r} has a non-integer size")
            entries[name] = FileEntry(entry["sha256"], size)
        config = JudgeConfig.from_json(_section(data, "config"), str(path))
        return cls(directory, MappingProxyType(entries), MappingProxyType(data), config)

    # ---- sections ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The manifest's ``name``, or the directory's."""
        return str(self.manifest.get("name", self.directory.name))

    @property
    def labels(self) -> list[Any] | None:
        """The model's logit slots as the manifest lists them (``None`` if it does not)."""
        labels = self.manifest.get("labels")
        return list(labels) if isinstance(labels, list) else None

    def section(self, key: str) -> Mapping[str, Any]:
        """A sub-object of the manifest, typed: a malformed one is a load error, not a crash."""
        return _section(self.manifest, key)

    def tagger(self) -> TaggerSpec:
        return TaggerSpec.from_json(self.section("tagger"), f"{self.directory}/{MANIFEST}")

    def ocr(self) -> OcrSpec:
        return OcrSpec.from_json(self.section("ocr"), f"{self.directory}/{MANIFEST}")

    def vision_dir(self) -> Path:
        """The bundle's own vision models if it ships them, otherwise the default ones."""
        own = self.directory / VISION_SUBDIR
        return own if own.is_dir() else DEFAULT_VISION_DIR

    def precedent_dir(self) -> Path:
        """The bundle's own precedent index if it ships one, otherwise the default one."""
        own = self.directory / PRECEDENT_SUBDIR
        return own if own.is_dir() else DEFAULT_PRECEDENT_DIR

    # ---- files ---------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """Whether ``name`` is listed and present (it is still verified when read)."""
        return name in self.files and (self.directory / name).is_file()

    def read(self, name: str) -> bytes:
        """The bytes of ``name`` after checking them against the manifest.

        A file the manifest does not list is refused too: an unlisted file is an unchecked one.
        """
        directory = self.directory
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (
                ".", ".."):
            raise ModelLoadError(f"bundle file name {name!r} is not a plain file name")
        entry = self.files.get(name)
        if entry is None:
            raise ModelLoadError(f"{name} is not listed in {directory}/manifest.json, so it "
                                 "cannot be verified; re-export the bundle")
        path = directory / name
        if not path.exists():
            raise ModelLoadError(f"bundle file missing: {path}")
        try:
            data = _read_regular(path, MAX_FILE_BYTES, entry.bytes)
        except OSError as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ModelLoadError(f"{path} does not match its manifest sha256 (corrupt or "
                                 "modified); refusing to load it")
        return data

    def read_text(self, name: str) -> str:
        """A verified file decoded as UTF-8."""
        data = self.read(name)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelLoadError(f"{self.directory}/{name} is not UTF-8 text: {exc}") from exc


def _read_regular(path: Path, limit: int, size: int | None) -> bytes:
    """The bytes of the regular file ``path``, its size checked before any is read: exactly
    ``size`` when given, else at most ``limit``. A FIFO, device or directory is refused
    without blocking on it, and a file bigger than it should be is never read into memory
    (a 3 GB file in a 466 kB file's place took 14 s and 3 GB before this check)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelLoadError(f"{path} is not a regular file; refusing to read it")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        if size is not None and st.st_size != size:
            raise ModelLoadError(f"{path} is {st.st_size:,} bytes; the manifest says "
                                 f"{size:,} (truncated or replaced)")
        if st.st_size > limit:
            raise ModelLoadError(f"{path} is {st.st_size:,} bytes, over the {limit:,} a "
                                 "bundle reads; refusing to read it")
        want = min(limit, st.st_size if size is None else size)
        data = f.read(want + 1)  # one byte more: a file that grew since fstat is caught
    if len(data) != want:
        raise ModelLoadError(f"{path} changed size while it was read ({len(data):,} bytes, "
                             f"{want:,} expected); refusing to load it")
    return data


def _section(manifest: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = manifest.get(key, {})
    if not isinstance(value, dict):
        raise ModelLoadError(f"manifest field {key!r} must be an object, "
                             f"not {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------- writing
def hash_files(directory: Path, names: Iterable[str]) -> dict[str, FileEntry]:
    """The ``files`` entries of ``names`` in ``directory``, in sorted order."""
    return {name: FileEntry.of(Path(directory) / name) for name in sorted(names)}


def files_json(files: Mapping[str, FileEntry]) -> dict[str, dict[str, Any]]:
    return {name: entry.to_json() for name, entry in files.items()}


def read_manifest_json(directory: Path) -> dict[str, Any]:
    """A manifest as plain JSON, for an exporter that updates one in place (unchecked)."""
    data: dict[str, Any] = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    return data


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest.json`` the one way every manifest is written (2-space JSON)."""
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def judge_manifest(*, name: str, labels: list[str], config: JudgeConfig,
                   files: Mapping[str, FileEntry], **sections: Any) -> dict[str, Any]:
    """A judge manifest: the fields the runtime reads first, then the exporter's ``sections``
    (training, parity, versions, licences, created, ...) as given."""
    return {"name": name, "format": SCHEMA_VERSION, "labels": list(labels),
            "config": config.to_json(), "files": files_json(files), **sections}
