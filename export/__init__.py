"""Export tools: the judge (``python -m export.to_onnx``) and the vision models
(``python -m export.vision_models``), run from a checkout with vlmguard installed.

``python export/to_onnx.py`` works too: run as a file, a script runs itself again as its
module (the guard at the top of each), so its imports resolve one way only.
"""

from __future__ import annotations

from pathlib import Path

from vlmguard.bundle import VISION_SUBDIR

ROOT = Path(__file__).resolve().parents[1]
SOURCE_BUNDLE = ROOT / "sdk" / "vlmguard" / "models" / "default"
"""The checkout's default bundle, which the exporters write by default (the installed
``vlmguard.bundle.DEFAULT_DIR`` may be a copy in site-packages)."""
SOURCE_VISION = SOURCE_BUNDLE / VISION_SUBDIR
