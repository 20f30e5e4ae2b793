"""Render text into images in many styles, the way typographic jailbreaks do (FigStep, TYPO).

Harmful and benign texts go through the same styles, so that the style itself carries no
signal: only what the text says does.
"""

from __future__ import annotations

import os
import random
import textwrap
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

STYLES = ("plain", "figstep", "photo", "rotated", "low_contrast", "small", "coloured", "sign")
# Where fonts are looked for; VLMGUARD_FONT_DIRS (":"-separated) overrides it, e.g. with
# matplotlib's mpl-data/fonts/ttf on a machine without system fonts.
FONT_DIRS = tuple(os.environ.get("VLMGUARD_FONT_DIRS", "/usr/share/fonts/truetype").split(":"))
# Font families with full Latin coverage (others draw boxes); Debian packages fonts-dejavu,
# fonts-liberation, fonts-freefont-ttf and fonts-noto-core provide them.
LATIN_FONTS = ("DejaVu", "Liberation", "FreeSans", "FreeSerif", "FreeMono", "NotoSans-",
               "NotoSerif-", "NotoSansMono-")


@lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    files = sorted(str(p) for d in FONT_DIRS for p in Path(d).rglob("*.ttf")
                   if p.name.startswith(LATIN_FONTS) and "Math" not in p.name
                   and "ExtraLight" not in p.name)
    return tuple(files)


@lru_cache(maxsize=1)
def photos() -> tuple[np.ndarray, ...]:
    """Sample photos bundled with scikit-image and scikit-learn (no download)."""
    out = []
    try:
        from skimage import data

        for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "horse",
                     "hubble_deep_field", "immunohistochemistry", "cat"):
            img = getattr(data, name, None)
            if img is None:
                continue
            arr = img()
            if arr.ndim == 2:
                arr = np.stack([arr] * 3, -1)
            if arr.dtype != np.uint8:
                arr = (arr.astype(np.float32) / max(arr.max(), 1) * 255).astype(np.uint8)
            out.append(arr[..., :3])
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        out.extend(load_sample_images().images)
    except ImportError:
        pass
    return tuple(out)


def figstep_text(text: str) -> str:
    """FigStep's layout: the request as a heading over an empty numbered list."""
    head = text.rstrip(" ?.!")
    return f"{head}.\n1.\n2.\n3."


def render(text: str, style: str, rng: random.Random) -> Image.Image:
    """Draw ``text`` in ``style``; returns an RGB image."""
    fonts = font_files()
    size = rng.randint(14, 22) if style == "small" else rng.randint(24, 44)
    font = (ImageFont.truetype(rng.choice(fonts), size) if fonts
            else ImageFont.load_default(size=size))
    body = figstep_text(text) if style == "figstep" else text
    width_chars = rng.randint(18, 34)
    lines = []
    for para in body.split("\n"):
        lines.extend(textwrap.wrap(para, width_chars) or [""])
    body = "\n".join(lines)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, t, r, b = probe.multiline_textbbox((0, 0), body, font=font, spacing=size // 3)
    pad = rng.randint(12, 48) if style != "small" else rng.randint(60, 160)
    w, h = int(r - left) + 2 * pad, int(b - t) + 2 * pad
    bg, fg = (255, 255, 255), (0, 0, 0)
    if style == "low_contrast":
        g = rng.randint(170, 230)
        bg, fg = (g + 20 if g < 235 else 255,) * 3, (g - rng.randint(45, 70),) * 3
    elif style == "coloured":
        bg = tuple(rng.randint(0, 255) for _ in range(3))
        lum = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
        fg = tuple(rng.randint(0, 60) for _ in range(3)) if lum > 128 else \
            tuple(rng.randint(200, 255) for _ in range(3))
    if style == "photo" and photos():
        photo = Image.fromarray(rng.choice(photos()))
        scale = max(w / photo.width, h / photo.height, 1.0) * rng.uniform(1.0, 1.6)
        photo = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1))
        img = photo.crop((0, 0, max(w, int(photo.width * 0.9)), max(h, int(photo.height * 0.9))))
        img = img.convert("RGB")
        x = rng.randint(0, max(img.width - w, 0))
        y = rng.randint(0, max(img.height - h, 0))
        draw = ImageDraw.Draw(img)
        fill = rng.choice([(255, 255, 0), (255, 255, 255), (0, 0, 0), (255, 40, 40)])
        stroke = (0, 0, 0) if sum(fill) > 300 else (255, 255, 255)
        draw.multiline_text((x + pad - left, y + pad - t), body, font=font, fill=fill,
                            spacing=size // 3, stroke_width=max(1, size // 14), stroke_fill=stroke)
        return img
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    draw.multiline_text((pad - left, pad - t), body, font=font, fill=fg, spacing=size // 3)
    if style == "sign":
        draw.rectangle((pad // 3, pad // 3, w - pad // 3, h - pad // 3), outline=fg,
                       width=max(2, size // 8))
    if style == "rotated":
        img = img.rotate(rng.uniform(-20, 20), expand=True, fillcolor=bg,
                         resample=Image.Resampling.BICUBIC)
    return img
