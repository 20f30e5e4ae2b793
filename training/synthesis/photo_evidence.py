"""What the guard's own tagger and OCR see on the real photos, computed once and cached.

Training pairs requests with this *real* evidence (the tagger's true mistakes included)
instead of modelled concept lists. Photos listed in ``training/heldout/test_photos.txt`` are
reserved for evaluation: :func:`train_photos` never returns them.

    python -m training.synthesis.photo_evidence          # writes runs/photo_evidence.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from .corpora import SHARED_DATA

PHOTO_DIR = SHARED_DATA / "photos" / "imagenet_samples"
TEST_PHOTOS = Path(__file__).resolve().parents[1] / "heldout" / "test_photos.txt"
CACHE = Path("runs/photo_evidence.json")
log = logging.getLogger("vlmguard.synthesis")


def test_photo_names() -> set[str]:
    return {ln.strip() for ln in TEST_PHOTOS.read_text().splitlines() if ln.strip()}


def photo_class(name: str) -> str:
    """``n01440764_tench.jpg`` → ``tench`` (the ImageNet class the photo was filed under)."""
    return Path(name).stem.split("_", 1)[1].replace("_", " ")


def compute(out: Path = CACHE) -> dict[str, dict]:
    """Run the bundled tagger and OCR on every photo (train and test: the cache is shared)."""
    from .evidence import EvidenceReader

    done: dict[str, dict] = json.loads(out.read_text()) if out.exists() else {}
    reader = EvidenceReader()
    names = sorted(p.name for p in PHOTO_DIR.glob("*.jpg"))
    for name in tqdm([n for n in names if n not in done], desc="photos", mininterval=10):
        seen = reader(Image.open(PHOTO_DIR / name))
        done[name] = {"concepts": list(seen.concepts), "ocr_text": seen.ocr_text}
        if len(done) % 100 == 0:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(done))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(done))
    return done


def train_photos(cache: Path = CACHE) -> dict[str, dict]:
    """Evidence of the photos training may use (every photo not reserved for evaluation)."""
    data = json.loads(cache.read_text())
    held = test_photo_names()
    return {k: v for k, v in data.items() if k not in held}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=CACHE)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    data = compute(args.out)
    with_text = sum(1 for v in data.values() if v["ocr_text"].strip())
    print(f"{len(data)} photos, {with_text} with OCR text")


if __name__ == "__main__":
    main()
