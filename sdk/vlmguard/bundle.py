"""Read a bundle's manifest and load its files only after checking them against it.

A bundle whose bytes differ from what was exported must never load: a model file overwritten
in place still parses as ONNX and then answers "safe" to everything. So every file the guard
reads is hashed (sha256) and compared with the manifest, and the bytes that were hashed are
the bytes that are used (no second read that could see a different file). Every way a bundle
can be broken (no manifest, a manifest that is not a JSON object, a file missing from the
manifest or the disk, a size or hash mismatch, a file that does not parse) raises
:class:`~vlmguard.errors.ModelLoadError`.

Cost: hashlib's sha256 runs at about 1-2 GB/s on one core, so the ~60 MB default bundle
adds roughly 50-100 ms to a cold start (see the README's cost budget).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

_HEX64 = re.compile(r"[0-9a-f]{64}")


def load_manifest(directory: Path, required: bool = True) -> dict[str, Any]:
    """The parsed ``manifest.json`` of ``directory`` (``{}`` if absent and not required)."""
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        if required:
            raise ModelLoadError(f"{directory} is not a vlmguard bundle (no manifest.json)")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object, not {type(data).__name__}")
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelLoadError(f"{path} lists no files with their sha256; re-export the bundle")
    for name, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and _HEX64.fullmatch(entry["sha256"])):
            raise ModelLoadError(f"{path}: entry for {name!r} has no valid sha256")
        if "bytes" in entry and (not isinstance(entry["bytes"], int)
                                 or isinstance(entry["bytes"], bool)):
            raise ModelLoadError(f"{path}: entry for {name!r} has a non-integer size")
    return data


def section(manifest: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A sub-object of the manifest, typed: a malformed one is a load error, not a crash."""
    value = manifest.get(key, {})
    if not isinstance(value, dict):
        raise ModelLoadError(f"manifest field {key!r} must be an object, "
                             f"not {type(value).__name__}")
    return value


def read_verified(directory: Path, manifest: Mapping[str, Any], name: str) -> bytes:
    """The bytes of ``directory/name`` after checking them against the manifest.

    A file the manifest does not list is refused too: an unlisted file is an unchecked one.
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (
            ".", ".."):
        raise ModelLoadError(f"bundle file name {name!r} is not a plain file name")
    entry = manifest.get("files", {}).get(name)
    if entry is None:
        raise ModelLoadError(f"{name} is not listed in {directory}/manifest.json, so it "
                             "cannot be verified; re-export the bundle")
    path = Path(directory) / name
    if not path.is_file():
        raise ModelLoadError(f"bundle file missing: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if "bytes" in entry and len(data) != entry["bytes"]:
        raise ModelLoadError(f"{path} is {len(data):,} bytes; the manifest says "
                             f"{entry['bytes']:,} (truncated or replaced)")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise ModelLoadError(f"{path} does not match its manifest sha256 (corrupt or "
                             "modified); refusing to load it")
    return data


def read_verified_text(directory: Path, manifest: Mapping[str, Any], name: str) -> str:
    """A verified file decoded as UTF-8."""
    data = read_verified(directory, manifest, name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{directory}/{name} is not UTF-8 text: {exc}") from exc
