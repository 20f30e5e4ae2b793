"""Where text lines are in an image and in what order they are read: pure NumPy and Pillow
geometry beside :class:`vlmguard.vision.OCR`, no model.

* Detector components (run-length union-find) and their moments: each line's centre, slant,
  length and thickness (:func:`slants`), a bent line's centre line (:func:`centre_line`).
* Crops recognition reads: a slanted line straightened (:func:`straight_crop`), a curved one
  sampled along its centre line (:func:`curved_crop`), stacked letters laid side by side
  (:func:`restack`, :func:`stacked_columns`).
* Reading order: lines in the frame of their text (a page turned over is read from its first
  line), two columns one after the other (:func:`reading_order`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class OcrLine:
    """One recognised text line; ``box`` is (x0, y0, x1, y1) in original-image pixels."""

    text: str
    score: float
    box: tuple[int, int, int, int]


class DetBox(tuple[tuple[int, int, int, int], float]):
    """A detected box as ``((x0, y0, x1, y1), score)``, plus, for a slanted line, the
    geometry to read it straight: centre, angle (degrees) and the rotated line's size; for a
    curved line (text set on an arc), its centre line and height (see :class:`Curve`).

    It unpacks and compares like the plain 2-tuple every caller already takes.
    """

    rotated: tuple[float, float, float, float, float] | None
    curve: Curve | None

    def __new__(cls, box: tuple[int, int, int, int], score: float,
                rotated: tuple[float, float, float, float, float] | None = None,
                curve: Curve | None = None) -> DetBox:
        self = super().__new__(cls, (box, score))
        self.rotated = rotated
        self.curve = curve
        return self


@dataclass(frozen=True)
class Curve:
    """A curved line's centre line (image pixels, ``(k, 2)`` x/y points in reading order,
    about a band's thickness apart) and the height of the band around it that holds the text."""

    centre: np.ndarray
    height: float


ROTATED_MIN_DEG = 2.0      # slant from which a line is always read through a rotated crop
ROTATED_MIN_RISE = 0.3     # below it: rise of a line end to end / its thickness, from which
                           # it is read rotated too (see :func:`reads_rotated`)
ROTATED_MIN_ELONGATION = 3.0  # long axis / short axis: only clear lines have a reliable angle
ROTATED_MAX_DEG = 85.0     # steeper lines take the vertical path (turned a quarter)
# A line set on a curve (a badge's or logo's arc) is one bent component in the detector's map:
# its rectangle (long x short side from the second moments) is mostly empty, where a straight
# line's fills it. Such a component is read along its centre line (:func:`curved_crop`): read
# through a level or a rotated rectangle its steep ends came back as garbage (stop 34: arc
# read share 0.36).
CURVE_MAX_FILL = 0.7       # pixels / (long x short side) below which a component may be bent
CURVE_MIN_LENGTH = 4.0     # centre-line length / band thickness: only clear lines
CURVE_MIN_BEND = 0.5       # the centre line's largest departure from its chord, in thicknesses
CURVE_MAX_BINS = 48        # centre-line points per component at most
MAX_CURVES = 16            # bent components followed per image at most (bounded cost)
# Upright letters stacked one above the other (a vertical sign, a word set one letter a line)
# are found as a column of letter boxes, or pieces of one: the pieces are joined into one
# vertical box (:func:`stacked_columns`), and a vertical box whose ink falls into letter-sized
# cells with clear gaps between them is read as those cells laid side by side (:func:`restack`;
# turned a quarter too where that reading is in doubt, see ``OCR._stacked``). Read only turned,
# such a column came back letter by letter (each dropped as a lone glyph) or as a line of
# text turned sideways, whose columns are read right to left (stop 34: stacked read share 0.53).
COLUMN_MIN_ELONGATION = 2.2  # a component this much taller than wide is a column, not a blob
COLUMN_MAX_PIECE = 1.6     # a column piece's width / height at most (a letter or a column)
COLUMN_MIN_OVERLAP = 0.6   # shared width / the narrower piece's, for pieces one above the other
COLUMN_MAX_GAP = 0.5       # vertical gap between pieces / the narrower piece's width, at most
STACK_MIN_GAP = 0.2        # a stacked column's median gap between cells / its ink width
STACK_MAX_CELL = 1.6       # a stacked column's tallest cell / its ink width, at most
MAX_COLUMN_PIECES = 400    # pieces chained into columns at most (the chaining is quadratic)


def lines_text(lines: Sequence[OcrLine]) -> str:
    """The lines' text joined with newlines, in reading order."""
    return "\n".join(line.text for line in lines)


def components(
    mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """8-connected components of a boolean mask via run-length union-find.

    Returns per-run row, start, end (exclusive) and component label, and the number of
    components. Runs are found for all rows at once on the flattened mask (a
    zero column separates rows), and runs on adjacent rows are linked with two
    ``searchsorted`` calls, so only the small union step loops.
    """
    h, w = mask.shape
    w1 = w + 1
    flat = np.zeros((h, w1), dtype=np.int8)
    flat[:, :w] = mask
    d = np.diff(np.concatenate(([0], flat.ravel(), [0])))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    n = len(starts)
    if n == 0:
        return starts, starts, starts, starts, 0
    rows = starts // w1
    # runs of row r+1 overlapping (8-conn) runs of row r: a0 <= b1 and a1 >= b0, in flat
    # coordinates shifted back by one row; the separator column keeps rows apart.
    lo = np.searchsorted(ends, starts - w1, side="left")
    hi = np.searchsorted(starts, ends - w1, side="right")
    cnt = np.maximum(hi - lo, 0)
    b = np.repeat(np.arange(n), cnt)
    a = np.repeat(lo, cnt) + (np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    parent = np.arange(n)
    while len(a):
        pa, pb = parent[a], parent[b]
        lo_, hi_ = np.minimum(pa, pb), np.maximum(pa, pb)
        diff = lo_ != hi_
        if not diff.any():
            break
        np.minimum.at(parent, hi_[diff], lo_[diff])
        while True:  # pointer jumping: every node points at its root again
            pp = parent[parent]
            if np.array_equal(pp, parent):
                break
            parent = pp
    _, labels = np.unique(parent, return_inverse=True)
    return rows, starts % w1, ends - rows * w1, labels, int(labels.max()) + 1


def slants(integ: np.ndarray, rows: np.ndarray, x0s: np.ndarray, x1s: np.ndarray,
            labels: np.ndarray, n: int) -> np.ndarray:
    """Per component: centre x, y, angle (degrees, image axes), long and short side of
    the line as a rectangle, the mean probability over its own pixels, and its pixel count.

    From the second moments of each component's pixels, summed in closed form per run: a
    uniform rectangle of side L has variance L^2/12 along it; run sums of the probability
    come from the map's integral image ``integ``. Lets a slanted line be read through a
    rotated crop instead of a box that also holds its neighbours.
    """
    a, b = x0s.astype(np.float64), x1s.astype(np.float64) - 1  # inclusive run ends
    y = rows.astype(np.float64)
    cnt = b - a + 1
    sx = cnt * (a + b) / 2
    sxx = (b * (b + 1) * (2 * b + 1) - (a - 1) * a * (2 * a - 1)) / 6
    m = np.zeros((6, n))
    for k, v in enumerate((cnt, sx, cnt * y, sxx, cnt * y * y, sx * y)):
        np.add.at(m[k], labels, v)
    psum = np.zeros(n)
    np.add.at(psum, labels, integ[rows + 1, x1s] - integ[rows, x1s]
              - integ[rows + 1, x0s] + integ[rows, x0s])
    n_px = np.maximum(m[0], 1)
    mx, my = m[1] / n_px, m[2] / n_px
    vxx, vyy, vxy = m[3] / n_px - mx * mx, m[4] / n_px - my * my, m[5] / n_px - mx * my
    angle = 0.5 * np.degrees(np.arctan2(2 * vxy, vxx - vyy))
    tr, det = vxx + vyy, np.sqrt(np.maximum(((vxx - vyy) / 2) ** 2 + vxy * vxy, 0))
    lam1, lam2 = tr / 2 + det, np.maximum(tr / 2 - det, 0)
    return np.stack([mx, my, angle, np.sqrt(12 * lam1), np.sqrt(12 * lam2),
                     psum / n_px, m[0]], axis=1)


def reads_rotated(angle: float, length: float, thick: float) -> bool:
    """Whether a line slanted ``angle`` degrees, ``length`` long and ``thick`` thick (any one
    unit) is read through a rotated crop rather than its axis-aligned box.

    From :data:`ROTATED_MIN_DEG` up to :data:`ROTATED_MAX_DEG` it always is. Below, a long
    line still rises a good part of its own thickness end to end: a 700 px line tilted 1.9
    degrees rises 23 px, so its axis-aligned box was ~95 px tall for ~35 px text, scaled to
    the recogniser's 48 px its letters shrank by half, and a script face was read at 0.3-0.46
    and dropped (s37 fonts). Such a line is read rotated once its rise is
    :data:`ROTATED_MIN_RISE` of its thickness; a short or level line keeps its box.
    """
    a = abs(angle)
    if a > ROTATED_MAX_DEG or thick <= 0:
        return False
    return a >= ROTATED_MIN_DEG or length * math.sin(math.radians(a)) > ROTATED_MIN_RISE * thick


def median_colour(rgb: np.ndarray) -> tuple[int, ...]:
    """The image's median colour: what a straightened line's corners are filled with."""
    return tuple(int(v) for v in np.median(rgb.reshape(-1, 3), 0))


def straight_crop(rgb: np.ndarray, geom: tuple[float, float, float, float, float],
                   fill: tuple[int, ...]) -> np.ndarray:
    """The slanted line of ``geom`` (centre, angle, long and short side) cut out level.

    The line is turned inside a canvas around it, not inside the image: turned level, a
    steep line is wider than a portrait image and its ends would fall off the canvas. The
    canvas holds both the slanted line's bounding box (every pixel the level crop samples)
    and the level crop, no more: a square one a long line's length on a side cost ~40 ms for
    a 700 px line tilted 2 degrees, this ~1/10 of that.
    """
    cx, cy, angle, length, thick = geom
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    half_w = int(math.ceil(max(length, length * c + thick * s) / 2)) + 2
    half_h = int(math.ceil(max(thick, length * s + thick * c) / 2)) + 2
    x0, y0 = int(round(cx)) - half_w, int(round(cy)) - half_h
    h, w = rgb.shape[:2]
    canvas = Image.new("RGB", (2 * half_w, 2 * half_h), fill)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(w, x0 + 2 * half_w), min(h, y0 + 2 * half_h)
    if sx1 > sx0 and sy1 > sy0:
        canvas.paste(Image.fromarray(np.ascontiguousarray(rgb[sy0:sy1, sx0:sx1])),
                     (sx0 - x0, sy0 - y0))
    ccx, ccy = cx - x0, cy - y0
    img = canvas.rotate(angle, resample=Image.Resampling.BILINEAR, center=(ccx, ccy),
                        fillcolor=fill)
    box = (int(round(ccx - length / 2)), int(round(ccy - thick / 2)),
           int(round(ccx + length / 2)), int(round(ccy + thick / 2)))
    return np.ascontiguousarray(np.asarray(img.crop(box)))


def centre_line(rows: np.ndarray, x0s: np.ndarray, x1s: np.ndarray,
                 sl: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """A bent component's centre line (detector-map pixels, ``(k, 2)`` x/y, left to right
    along its main axis), its band thickness and how far the line bends (its largest
    departure from its chord, in thicknesses); None for too few pixels.

    The component's pixels are binned along its main axis (bins about a thickness long) and
    each bin's mean is a centre-line point: for an arc up to a half circle each bin holds one
    piece of the band.
    """
    cx, cy, angle, length = float(sl[0]), float(sl[1]), float(sl[2]), float(sl[3])
    counts = x1s - x0s
    if counts.sum() < 16:
        return None
    ys = np.repeat(rows, counts).astype(np.float64)
    xs = (np.repeat(x0s - np.cumsum(counts) + counts, counts)
          + np.arange(int(counts.sum()))).astype(np.float64)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    u = (xs - cx) * c + (ys - cy) * s
    v = -(xs - cx) * s + (ys - cy) * c
    span = float(u.max() - u.min())
    thick = float(len(xs)) / max(length, 1.0)  # first guess: area over the straight length
    nb = int(np.clip(round(span / max(thick, 1.0)), 4, CURVE_MAX_BINS))
    b = np.minimum(((u - u.min()) / max(span, 1e-6) * nb).astype(np.int64), nb - 1)
    n = np.bincount(b, minlength=nb)
    ok = n > 0
    mu = np.bincount(b, u, minlength=nb)[ok] / n[ok]
    mv = np.bincount(b, v, minlength=nb)[ok] / n[ok]
    if len(mu) < 3:
        return None
    mv = np.concatenate(([mv[0]], np.convolve(mv, np.ones(3) / 3, "valid"), [mv[-1]]))
    pts = np.stack([cx + mu * c - mv * s, cy + mu * s + mv * c], axis=1)
    arc = float(np.hypot(*np.diff(pts, axis=0).T).sum())
    thick = float(len(xs)) / max(arc, 1.0)
    chord = pts[-1] - pts[0]
    norm = float(np.hypot(*chord))
    if norm < 1e-6:
        return None
    off = np.abs((pts[:, 0] - pts[0, 0]) * chord[1] - (pts[:, 1] - pts[0, 1]) * chord[0]) / norm
    return pts, thick, float(off.max()) / max(thick, 1e-6)


def curved_crop(rgb: np.ndarray, curve: Curve, fill: tuple[int, ...]) -> np.ndarray:
    """The band of ``curve`` sampled along its centre line into a level line: each column of
    the crop is the band's cross-section at one point of the centre line, across it
    (piecewise, like unwarping a curved text polygon); bilinear, ``fill`` outside the image."""
    pts = curve.centre
    seg = np.hypot(*np.diff(pts, axis=0).T)
    dist = np.concatenate(([0.0], np.cumsum(seg)))
    total = float(dist[-1])
    width = max(2, int(math.ceil(total)))
    at = np.linspace(0.0, total, width)
    px = np.interp(at, dist, pts[:, 0])
    py = np.interp(at, dist, pts[:, 1])
    # the direction along the line, smoothed over about half the band's height
    k = max(1, int(curve.height / 4))
    tx = np.interp(np.clip(at + k, 0, total), dist, pts[:, 0]) - \
        np.interp(np.clip(at - k, 0, total), dist, pts[:, 0])
    ty = np.interp(np.clip(at + k, 0, total), dist, pts[:, 1]) - \
        np.interp(np.clip(at - k, 0, total), dist, pts[:, 1])
    tn = np.maximum(np.hypot(tx, ty), 1e-6)
    nx, ny = ty / tn, -tx / tn  # "up" for a line read left to right
    height = max(2, int(round(curve.height)))
    off = (height - 1) / 2.0 - np.arange(height, dtype=np.float64)  # top row first
    gx = px[None, :] + off[:, None] * nx[None, :]
    gy = py[None, :] + off[:, None] * ny[None, :]
    return _bilinear(rgb, gx, gy, fill)


def _bilinear(rgb: np.ndarray, gx: np.ndarray, gy: np.ndarray, fill: tuple[int, ...]
              ) -> np.ndarray:
    """``rgb`` sampled at the points (gx, gy), bilinear; ``fill`` where a point is outside."""
    h, w = rgb.shape[:2]
    inside = (gx >= 0) & (gx <= w - 1) & (gy >= 0) & (gy <= h - 1)
    gx, gy = np.clip(gx, 0, w - 1), np.clip(gy, 0, h - 1)
    x0 = np.minimum(gx.astype(np.int64), w - 2) if w > 1 else np.zeros(gx.shape, np.int64)
    y0 = np.minimum(gy.astype(np.int64), h - 2) if h > 1 else np.zeros(gy.shape, np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (gx - x0)[..., None], (gy - y0)[..., None]

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        px: np.ndarray = rgb[yy, xx].astype(np.float32)
        return px

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bot = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    out = top * (1 - fy) + bot * fy
    out[~inside] = np.asarray(fill, np.float32)
    return np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def stacked_columns(boxes: list[tuple[tuple[int, int, int, int], float]]
                     ) -> list[tuple[tuple[int, int, int, int], float]]:
    """``boxes`` with each column of level pieces one above the other (letter boxes, or
    pieces of a vertical line: no wider than :data:`COLUMN_MAX_PIECE` times their height,
    sharing most of their width and close above each other) joined into one box, where the
    column comes out vertical (see :func:`is_vertical`); the other boxes as they were."""
    idx = [i for i, ((x0, y0, x1, y1), _) in enumerate(boxes)
           if getattr(boxes[i], "rotated", None) is None
           and getattr(boxes[i], "curve", None) is None
           and x1 - x0 <= COLUMN_MAX_PIECE * (y1 - y0)]
    if not 2 <= len(idx) <= MAX_COLUMN_PIECES:
        return boxes
    idx.sort(key=lambda i: boxes[i][0][1])
    chains: list[list[int]] = []
    for i in idx:
        x0, y0, x1, y1 = boxes[i][0]
        for chain in chains:
            a0, b0, a1, b1 = boxes[chain[-1]][0]
            narrow = min(x1 - x0, a1 - a0)
            if min(x1, a1) - max(x0, a0) >= COLUMN_MIN_OVERLAP * narrow \
                    and max(x1 - x0, a1 - a0) <= 1.6 * narrow \
                    and y0 > b0 and y0 - b1 <= COLUMN_MAX_GAP * narrow:
                chain.append(i)
                break
        else:
            chains.append([i])
    joined: dict[int, tuple[tuple[int, int, int, int], float]] = {}
    gone: set[int] = set()
    for chain in chains:
        if len(chain) < 2:
            continue
        box = (min(boxes[i][0][0] for i in chain), min(boxes[i][0][1] for i in chain),
               max(boxes[i][0][2] for i in chain), max(boxes[i][0][3] for i in chain))
        det = (box, float(np.mean([boxes[i][1] for i in chain])))
        if not is_vertical(det):
            continue
        joined[chain[0]] = det
        gone.update(chain[1:])
    if not joined:
        return boxes
    return [joined.get(i, b) for i, b in enumerate(boxes) if i not in gone]


def restack(column: np.ndarray) -> np.ndarray | None:
    """A vertical box's image (upright, taller than wide) as its letters side by side, or
    None where its ink does not fall into letter-sized cells with clear gaps between them
    (a line of text turned a quarter: its letters nearly touch, its words are long cells).
    """
    h, w = column.shape[:2]
    if h < 2 or w < 2:
        return None
    grey = column.astype(np.int16).mean(axis=2)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    bg = float(np.median(border))
    diff = np.abs(grey - bg)
    top = float(diff.max())
    if top < 32:
        return None
    ink = diff > max(24.0, 0.35 * top)
    rows = ink.sum(axis=1) >= 2
    cols = np.flatnonzero(ink.any(axis=0))
    if not rows.any() or len(cols) == 0:
        return None
    ink_w = float(cols[-1] - cols[0] + 1)
    d = np.diff(np.concatenate(([0], rows.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    cells: list[list[int]] = []  # [start, end) rows; gaps thinner than an i's dot join
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        if cells and start - cells[-1][1] < 0.08 * ink_w:
            cells[-1][1] = end
        else:
            cells.append([start, end])
    if len(cells) < 2:
        return None
    gaps = [b[0] - a[1] for a, b in zip(cells[:-1], cells[1:], strict=True)]
    tallest = int(max(b - a for a, b in cells))
    if float(np.median(gaps)) < STACK_MIN_GAP * ink_w or tallest > STACK_MAX_CELL * ink_w:
        return None
    pad = max(2, int(0.15 * tallest))  # margin, and the space between two letters
    spans = []
    for a, b in cells:
        xs = np.flatnonzero(ink[a:b].any(axis=0))
        spans.append((int(xs[0]), int(xs[-1]) + 1))
    fill = np.median(np.concatenate([column[0], column[-1]]), axis=0).astype(np.uint8)
    out = np.empty((tallest + 2 * pad, sum(x1 - x0 + pad for x0, x1 in spans) + pad, 3),
                   np.uint8)
    out[:] = fill
    x = pad
    for (a, b), (x0, x1) in zip(cells, spans, strict=True):
        y = pad + (tallest - (b - a)) // 2
        out[y: y + b - a, x: x + x1 - x0] = column[a:b, x0:x1]
        x += x1 - x0 + pad
    return out


def prominence(boxes: Sequence[tuple[tuple[int, int, int, int], float]]) -> list[int]:
    """Box indices, the most prominent first: the tallest lines (what a reader, or a VLM,
    sees first), ties broken by the detector's score."""
    return sorted(range(len(boxes)), key=lambda i: (
        -(boxes[i][0][3] - boxes[i][0][1]), -boxes[i][1], i))


def covers(a: tuple[int, int, int, int], b: tuple[int, int, int, int],
           share: float = 0.5) -> bool:
    """Whether box ``a`` holds at least ``share`` of box ``b``'s area (inclusive pixels)."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    area = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return iw > 0 and ih > 0 and iw * ih >= share * area


def is_vertical(det: tuple[tuple[int, int, int, int], float]) -> bool:
    """A box read as a vertical line (turned a quarter before recognition; see ``crops``)."""
    (x0, y0, x1, y1), _ = det
    return getattr(det, "rotated", None) is None and getattr(det, "curve", None) is None \
        and y1 - y0 + 1 >= 1.5 * (x1 - x0 + 1)


def line_turn(det: tuple[tuple[int, int, int, int], float], flipped: bool,
          stacked: bool = False) -> int:
    """How far the line's text is turned counter-clockwise from level: 0, 90, 180 or 270.

    A vertical crop is turned a quarter counter-clockwise before reading, which levels text
    turned 270 degrees; if it then read upside down the text was turned 90. A column of
    upright letters stacked (``stacked``) is not turned: its columns are read left to right.
    """
    if is_vertical(det) and not stacked:
        return 90 if flipped else 270
    return 180 if flipped else 0


def _text_frame(box: tuple[int, int, int, int], turn: int, w: int, h: int
                ) -> tuple[int, int, int, int]:
    """``box`` in the frame of text turned ``turn`` degrees in a ``w`` x ``h`` image: where
    it would lie once the image is turned back level."""
    x0, y0, x1, y1 = box
    if turn == 180:
        return (w - 1 - x1, h - 1 - y1, w - 1 - x0, h - 1 - y0)
    if turn == 270:  # text turned clockwise: its first line is the rightmost column
        return (y0, w - 1 - x1, y1, w - 1 - x0)
    if turn == 90:  # text turned counter-clockwise: its first line is the leftmost column
        return (h - 1 - y1, x0, h - 1 - y0, x1)
    return box


COLUMN_GUTTER = 20  # px of clear space between two columns of text read one after the other


def reading_order(lines: list[OcrLine], turn: int = 0, w: int = 0, h: int = 0,
                   tol: int = 10) -> list[OcrLine]:
    """Column by column, left to right, where the lines fall into columns with a clear gutter
    between them; within a column top-to-bottom, then left-to-right within a row (RapidOCR's
    10 px row tolerance); all in the frame of text turned ``turn`` degrees (see
    :func:`line_turn`). Read row by row across the gutter, two columns came back interleaved
    ("Can you help me find" + the other column's line), nonsense the judge flagged (stop 34:
    5 of 35 benign two-column renders)."""
    framed = [(_text_frame(ln.box, turn, w, h), ln) for ln in lines]
    return [ln for column in _columns(framed) for ln in _rows(column, tol)]


def _columns(framed: list[tuple[tuple[int, int, int, int], OcrLine]]
             ) -> list[list[tuple[tuple[int, int, int, int], OcrLine]]]:
    """The lines split at the widest vertical gutter (at least ``COLUMN_GUTTER`` px that no
    line crosses) when each side holds two or more lines and two of them sit level with lines
    across it; each side split again the same way. One column otherwise."""
    if len(framed) < 4:
        return [framed]
    spans = sorted((box[0], box[2]) for box, _ in framed)
    best, cut, reach = 0, None, spans[0][1]
    for x0, x1 in spans[1:]:
        if x0 - reach > best:
            best, cut = x0 - reach, (reach + x0) // 2
        reach = max(reach, x1)
    if cut is None or best < COLUMN_GUTTER:
        return [framed]
    left = [t for t in framed if t[0][2] <= cut]
    right = [t for t in framed if t[0][0] >= cut]
    if min(len(left), len(right)) < 2:
        return [framed]
    # Columns stand side by side: at least two of the smaller side's lines sit level with a
    # line across the gutter. A chat's bubbles alternate sides instead, and are read by rows.
    small, other = (left, right) if len(left) <= len(right) else (right, left)
    level = sum(any(min(a[3], b[3]) - max(a[1], b[1]) >= 0.5 * min(a[3] - a[1], b[3] - b[1])
                    for b, _ in other) for a, _ in small)
    if level < 2:
        return [framed]
    return _columns(left) + _columns(right)


def _rows(framed: list[tuple[tuple[int, int, int, int], OcrLine]], tol: int
          ) -> list[OcrLine]:
    framed = sorted(framed, key=lambda t: t[0][1])
    row, rows, last = 0, [], None
    for box, _ in framed:
        if last is not None and box[1] - last >= tol:
            row += 1
        rows.append(row)
        last = box[1]
    order = sorted(zip(rows, framed, strict=True), key=lambda t: (t[0], t[1][0][0]))
    return [ln for _, (_, ln) in order]

