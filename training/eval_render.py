"""Render asks into images for the evaluation's invariance checks.

Deliberately *not* the styles of ``training/synthesis/typography.py``: other layouts, fonts,
colours, angles and paper, so that the evaluation measures transfer to typography the model
was not tuned on. Deterministic: the same (text, style, seed) gives the same pixels.

Styles: ``list`` (FigStep: the ask as a heading over an empty numbered list), ``sign`` (a
coloured road/warning board, upper case), ``note`` (a sticky note with hand-jittered ink),
``rotated`` (15-30 degrees either way), ``turned`` (sideways or upside down: 90, 180 or 270
degrees; added in stop 24), ``isoluminant`` (coloured ink on a grey of the same brightness;
stop 24), ``steep`` (50-80 degrees, a third also upside down; stop 25), ``mirrored``
(left-right, a quarter top-bottom; stop 34), ``script_note`` (long lines in a script
face, the page tilted 0.5-2 degrees; s37), ``low_contrast``
(grey on grey with paper noise),
``on_photo`` (pasted on a real photo), and ``document`` (several lines of text, for the
position-in-the-image check).
"""

from __future__ import annotations

import hashlib
import io
import random
import textwrap
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

STYLES = ("list", "sign", "note", "rotated", "low_contrast", "on_photo", "turned",
          "isoluminant", "steep", "mirrored", "script_note")
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = {
    "sans": "DejaVuSans.ttf", "sans_bold": "DejaVuSans-Bold.ttf",
    "serif": "DejaVuSerif.ttf", "serif_bold": "DejaVuSerif-Bold.ttf",
    "condensed_bold": "DejaVuSansCondensed-Bold.ttf", "oblique": "DejaVuSans-Oblique.ttf",
    "serif_italic": "DejaVuSerif-Italic.ttf", "mono": "DejaVuSansMono.ttf",
}


# The ``script_note`` face: the first of these installed (Debian fonts-urw-base35,
# fonts-dancingscript); on a machine with neither, DejaVu Sans Oblique (a long line tilted
# this little is lost in it too, s37 tilt) and the report says which (:func:`script_face`).
SCRIPT_FONTS = (Path("/usr/share/fonts/opentype/urw-base35/Z003-MediumItalic.otf"),
                Path("/usr/share/fonts/opentype/dancingscript/DancingScript-Regular.otf"))


def script_face() -> str:
    """The file name of the face ``script_note`` is drawn in on this machine."""
    for path in SCRIPT_FONTS:
        if path.is_file():
            return path.name
    return FONTS["oblique"] if (FONT_DIR / FONTS["oblique"]).is_file() else "PIL default"


@lru_cache(maxsize=16)
def _script_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in SCRIPT_FONTS:
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return font("oblique", size)


@lru_cache(maxsize=64)
def font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A DejaVu face at ``size`` px, or PIL's built-in font where DejaVu is missing."""
    path = FONT_DIR / FONTS[name]
    return ImageFont.truetype(str(path), size) if path.is_file() \
        else ImageFont.load_default(size=size)


def _rng(text: str, style: str, seed: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{style}\x00{text}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _text_size(fnt: ImageFont.ImageFont, text: str) -> tuple[int, int]:
    left, top, right, bottom = fnt.getbbox(text or " ")
    return int(right - left), int(bottom - top)


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width) or [""]


def render_list(text: str, rng: random.Random) -> Image.Image:
    """FigStep: the ask as a bold heading over an empty numbered list with rules."""
    size = rng.randint(26, 34)
    head_font, body_font = font("serif_bold", size), font("serif", size)
    lines = _wrap(text.rstrip(" ?.!") + ":", rng.randint(26, 32))
    w = max(_text_size(head_font, ln)[0] for ln in lines) + 120
    w = max(w, 520)
    step = int(size * 1.5)
    h = 50 + step * len(lines) + 30 + step * 3 + 40
    bg = (250, 248, 240)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    y = 40
    for ln in lines:
        d.text((60, y), ln, font=head_font, fill=(20, 20, 60))
        y += step
    y += 30
    for k in range(1, 4):
        d.text((60, y), f"{k}.", font=body_font, fill=(20, 20, 60))
        d.line((60 + size * 2, y + size, w - 60, y + size), fill=(170, 170, 190), width=2)
        y += step
    return img


def render_sign(text: str, rng: random.Random) -> Image.Image:
    """A road/warning board: upper-case condensed bold, white or black on a colour, on a wall."""
    board, ink = rng.choice([((0, 110, 60), (255, 255, 255)), ((20, 60, 150), (255, 255, 255)),
                             ((240, 190, 0), (10, 10, 10)), ((190, 20, 30), (255, 255, 255))])
    size = rng.randint(30, 40)
    fnt = font("condensed_bold", size)
    lines = _wrap(text.upper(), rng.randint(18, 24))
    widths = [_text_size(fnt, ln)[0] for ln in lines]
    step = int(size * 1.35)
    bw, bh = max(widths) + 80, step * len(lines) + 70
    margin = 60
    wall = tuple(rng.randint(120, 170) for _ in range(3))
    img = Image.new("RGB", (bw + 2 * margin, bh + 2 * margin + 80), wall)
    d = ImageDraw.Draw(img)
    cx = img.width // 2
    d.rectangle((cx - 6, margin + bh, cx + 6, img.height), fill=(90, 90, 90))  # post
    d.rounded_rectangle((margin, margin, margin + bw, margin + bh), radius=22, fill=board,
                        outline=ink, width=5)
    y = margin + 35
    for ln, lw in zip(lines, widths, strict=True):
        d.text((cx - lw // 2, y), ln, font=fnt, fill=ink)
        y += step
    return img


def _sheet(w: int, h: int, paper: tuple[int, int, int], rng: random.Random
           ) -> tuple[Image.Image, ImageDraw.ImageDraw, tuple[int, int, int]]:
    """A blank sheet of ``paper`` for a hand-written note, its pen and an ink colour."""
    ink = rng.choice([(20, 40, 140), (30, 30, 30), (120, 20, 30)])
    img = Image.new("RGB", (w, h), paper)
    return img, ImageDraw.Draw(img), ink


def render_note(text: str, rng: random.Random) -> Image.Image:
    """A sticky note written by hand: italic ink, each word on its own jittered baseline."""
    size = rng.randint(28, 34)
    fnt = font(rng.choice(["oblique", "serif_italic"]), size)
    lines = _wrap(text, rng.randint(22, 28))
    step = int(size * 1.6)
    w = max(_text_size(fnt, ln)[0] for ln in lines) + 110
    h = step * len(lines) + 90
    paper = rng.choice([(255, 240, 140), (255, 214, 170), (210, 240, 200)])
    img, d, ink = _sheet(w, h, paper, rng)
    for k in range(len(lines) + 1):  # ruled lines
        y = 45 + k * step + size
        d.line((20, y, w - 20, y), fill=tuple(max(0, c - 35) for c in paper), width=1)
    y0 = 45
    for ln in lines:
        x = 50 + rng.randint(-6, 6)
        for word in ln.split(" "):
            ww, wh = _text_size(fnt, word)
            tile = Image.new("RGBA", (ww + 20, wh + 24), (0, 0, 0, 0))
            ImageDraw.Draw(tile).text((8, 4), word, font=fnt, fill=ink + (255,))
            tile = tile.rotate(rng.uniform(-5, 5), expand=True,
                               resample=Image.Resampling.BICUBIC)
            img.paste(tile, (x, y0 + rng.randint(-4, 4)), tile)
            x += ww + _text_size(fnt, " ")[0] + rng.randint(2, 12)
        y0 += step
    img = img.rotate(rng.uniform(-4, 4), expand=True, fillcolor=(230, 230, 230),
                     resample=Image.Resampling.BICUBIC)
    return img


def render_script_note(text: str, rng: random.Random) -> Image.Image:
    """A note written in a script face in long lines, the whole page tilted 0.5-2 degrees.

    Added in s37: such a line rose 20-25 px end to end, was cut as its axis-aligned box
    (about 3x its text's height: the OCR straightened only lines slanted 2 degrees or
    more), read at 0.3-0.5 and dropped whole. ``note``'s short lines in DejaVu italic never
    showed it.
    """
    size = rng.randint(30, 36)
    fnt = _script_font(size)
    width = rng.randint(600, 720)
    lines: list[str] = []
    for word in text.split():
        if lines and _text_size(fnt, lines[-1] + " " + word)[0] <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    lines = lines or [""]
    step = int(size * 1.7)
    w = max(_text_size(fnt, ln)[0] for ln in lines) + 100
    h = step * len(lines) + 80
    img, d, ink = _sheet(w, h, rng.choice([(255, 250, 235), (255, 240, 140), (235, 245, 255)]),
                         rng)
    y = 40
    for ln in lines:
        d.text((50 + rng.randint(-4, 4), y), ln, font=fnt, fill=ink)
        y += step
    tilt = rng.choice((-1, 1)) * rng.uniform(0.5, 2.0)
    return img.rotate(tilt, expand=True, fillcolor=(230, 230, 230),
                      resample=Image.Resampling.BICUBIC)


def _plain(text: str, rng: random.Random, fg: tuple[int, int, int] = (0, 0, 0),
           bg: tuple[int, int, int] = (255, 255, 255), face: str = "sans") -> Image.Image:
    size = rng.randint(28, 36)
    fnt = font(face, size)
    lines = _wrap(text, rng.randint(26, 34))
    step = int(size * 1.4)
    w = max(_text_size(fnt, ln)[0] for ln in lines) + 80
    img = Image.new("RGB", (w, step * len(lines) + 70), bg)
    d = ImageDraw.Draw(img)
    for k, ln in enumerate(lines):
        d.text((40, 35 + k * step), ln, font=fnt, fill=fg)
    return img


def render_plain(text: str, rng: random.Random) -> Image.Image:
    """Black sans on white: the easiest read (used for the carrier check)."""
    return _plain(text, rng)


def render_rotated(text: str, rng: random.Random) -> Image.Image:
    """Plain text turned 15-30 degrees either way."""
    img = _plain(text, rng, face="serif")
    angle = rng.uniform(15, 30) * rng.choice([-1, 1])
    return img.rotate(angle, expand=True, fillcolor=(255, 255, 255),
                      resample=Image.Resampling.BICUBIC)


def render_turned(text: str, rng: random.Random) -> Image.Image:
    """Plain text turned sideways or upside down (90, 180 or 270 degrees)."""
    img = _plain(text, rng, face="sans_bold")
    return img.rotate(rng.choice([90, 180, 270]), expand=True)


def render_steep(text: str, rng: random.Random) -> Image.Image:
    """Plain text at a steep slant, 50-80 degrees either way, a third of them also upside
    down (added in stop 25, after the reader was fixed for it: a regression check, not a
    blind one)."""
    img = _plain(text, rng, face="oblique")
    angle = rng.uniform(50, 80) * rng.choice([-1, 1]) + (180 if rng.random() < 1 / 3 else 0)
    return img.rotate(angle, expand=True, fillcolor=(255, 255, 255),
                      resample=Image.Resampling.BICUBIC)


def render_mirrored(text: str, rng: random.Random) -> Image.Image:
    """Plain text mirrored left-right (most) or top-bottom, as seen in a mirror or on a
    window from the other side (added in stop 34, after the reader was fixed for it: a
    regression check, not a blind one)."""
    img = _plain(text, rng, face=rng.choice(["sans", "serif"]))
    flip = (Image.Transpose.FLIP_TOP_BOTTOM if rng.random() < 1 / 4
            else Image.Transpose.FLIP_LEFT_RIGHT)
    return img.transpose(flip)


def render_isoluminant(text: str, rng: random.Random) -> Image.Image:
    """Coloured ink on a grey of the same brightness: plain to a reader who sees colour,
    nearly flat in brightness."""
    ink = rng.choice([(60, 140, 60), (200, 60, 60), (60, 60, 230), (150, 60, 160),
                      (30, 150, 150)])
    grey = round(0.299 * ink[0] + 0.587 * ink[1] + 0.114 * ink[2])
    return _plain(text, rng, fg=ink, bg=(grey, grey, grey), face="sans_bold")


def render_low_contrast(text: str, rng: random.Random) -> Image.Image:
    """Grey ink on grey paper (contrast ~25-40 levels) with light noise and blur."""
    bg = rng.randint(200, 225)
    fg = bg - rng.randint(25, 40)
    img = _plain(text, rng, fg=(fg, fg, fg + 4), bg=(bg, bg, bg - 4))
    arr = np.asarray(img).astype(np.int16)
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(-6, 7, arr.shape[:2])
    arr = np.clip(arr + noise[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(0.6))


def render_on_photo(text: str, rng: random.Random, photo: Image.Image | None = None
                    ) -> Image.Image:
    """The ask as a caption on a real photo: white bold with a dark outline, lower half."""
    if photo is None:
        return render_plain(text, rng)
    img = photo.convert("RGB")
    scale = max(1.0, 720 / max(img.size))
    img = img.resize((int(img.width * scale), int(img.height * scale)))
    size = max(20, img.width // 26)
    fnt = font("sans_bold", size)
    chars = max(12, int(img.width * 0.85 / (size * 0.6)))
    lines = _wrap(text, chars)
    step = int(size * 1.3)
    d = ImageDraw.Draw(img)
    y = max(10, img.height - step * len(lines) - rng.randint(20, 60))
    for ln in lines:
        lw = _text_size(fnt, ln)[0]
        d.text(((img.width - lw) // 2, y), ln, font=fnt, fill=(255, 255, 255),
               stroke_width=max(2, size // 12), stroke_fill=(0, 0, 0))
        y += step
    return img


def render_document(lines: list[str], rng: random.Random) -> Image.Image:
    """A to-do style page: one line per entry, top to bottom (position-in-image check)."""
    size = rng.randint(22, 26)
    fnt = font("sans", size)
    wrapped: list[str] = []
    for ln in lines:
        wrapped.extend(_wrap(ln, 48))
    step = int(size * 1.45)
    w = max(_text_size(fnt, ln)[0] for ln in wrapped) + 80
    img = Image.new("RGB", (max(w, 400), step * len(wrapped) + 60), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for k, ln in enumerate(wrapped):
        d.text((40, 30 + k * step), ln, font=fnt, fill=(25, 25, 25))
    return img


RENDERERS = {"list": render_list, "sign": render_sign, "note": render_note,
             "rotated": render_rotated, "low_contrast": render_low_contrast,
             "turned": render_turned, "isoluminant": render_isoluminant,
             "steep": render_steep, "mirrored": render_mirrored,
             "script_note": render_script_note, "plain": render_plain}


def render(text: str, style: str, seed: int = 0, photo: Image.Image | None = None
           ) -> Image.Image:
    """Draw ``text`` in ``style`` (``on_photo`` needs ``photo``); deterministic per seed."""
    rng = _rng(text, style, seed)
    if style == "on_photo":
        return render_on_photo(text, rng, photo)
    return RENDERERS[style](text, rng)


def png(img: Image.Image) -> bytes:
    """PNG bytes (fast compression: these images live only in memory and the cache key)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
