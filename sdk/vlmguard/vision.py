"""On-device vision models: an ImageNet concept tagger and a PP-OCR text reader.

Only numpy + onnxruntime are used at run time (no cv2/shapely/pyclipper), so the guard
stays installable on edge boxes. Every model input goes through
:func:`vlmguard.preprocess.resize_normalize`, the one resize definition shared with the
native (C) path.

* :class:`Tagger` runs EfficientNet-Lite0 once per image and returns both the top-k
  ImageNet concepts and the pooled 1280-d feature (for downstream probes), so the guard
  never pays for two passes.
* :class:`OCR` reimplements RapidOCR's PP-OCR pipeline (DB detection → crop → CTC
  recognition) in NumPy. Recognition is skipped when detection finds nothing, which is
  the common case for photos.
* On a GPU the OCR models run at a few fixed input shapes (:class:`FixedShapes`): ONNX
  Runtime's CUDA provider re-plans its convolutions whenever a session's input shape
  changes, which real photos do nearly every call.
* A text-presence gate runs the same detector at a fraction of the detection size first
  (:meth:`OCR.gate`): where its probability map shows nothing that could be text, full
  detection is skipped. It only ever skips on a clear "no": a broken map raises, and any
  pixel above a low threshold runs full detection.
* A large image is also detected at twice the detection size (the zoom pass, see
  :data:`ZOOM_SIDE`): small text a VLM still reads after its own downscale is too small for
  the detector at 640 pixels. It is bounded per request and per call, and an image denied it
  says it was read in part.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .bundle import DEFAULT_VISION_DIR, DET_LIMIT_SIDE, Bundle, OcrSpec
from .errors import GuardError, InvalidConfigError, InvalidInputError, ModelLoadError
from .ocr_geometry import (
    COLUMN_MIN_ELONGATION,
    CURVE_MAX_FILL,
    CURVE_MIN_BEND,
    CURVE_MIN_LENGTH,
    MAX_CURVES,
    ROTATED_MIN_ELONGATION,
    Curve,
    DetBox,
    OcrLine,
    centre_line,
    components,
    covers,
    curved_crop,
    is_vertical,
    line_turn,
    lines_text,
    median_colour,
    prominence,
    reading_order,
    reads_rotated,
    restack,
    slants,
    stacked_columns,
    straight_crop,
)
from .preprocess import resize_normalize
from .runtime import GPU_PROVIDERS, ProviderSpec, make_session

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger("vlmguard")

GATE_SCALE = 0.5
"""Gate input side / full detection side. At half the size a line of text still spans ~8
detector pixels when it spans ~16 at full size, and the pass costs a quarter as much."""
GATE_THRESH = 0.1
"""Full detection runs when any gate-map pixel reaches this (DB binarises at 0.3): a low bar,
so the gate skips only images where the detector sees nothing at all."""
GATE_MIN_SIDE = 160
"""Below this full-detection long side the gate would cost about as much as it saves."""
PAGE_SHARE = 0.4
"""An image whose most common colour covers this share of it (4 bits a channel, on a ~64x64
sample) is page-like: a render, a screenshot, a sign, a document. Those nearly always hold
text, so full detection runs without the gate, which would only add its ~10 ms. Measured:
89 % of training-style renders (every style but text pasted on a photo), all of the
evaluation's renders, JPEG-compressed or not, and 4.6 % of the 1,000 development photos."""
ZOOM_SIDE = 1280
"""Large images are also detected at this long side (:meth:`OCR.detect`, the zoom pass). A
VLM reads a photo at a long side of 1,000-2,000 pixels (Claude at most 1,568, GPT-4o 2,048
for wide images) or at its own size; at the 640-pixel detection size a line it reads easily
(x-height 8-10 px there) is a 3-5 pixel smudge on a 3,000-pixel photo and was missed (stop
37: text on a photo needed 56 px there; 28 with this pass). Run in tiles; costs about four
detections."""
ZOOM_MIN_SIDE = 1024
"""Images whose long side exceeds this get the zoom pass. Up to it the detector sees text at
0.6 of a VLM's scale or more, and read what a VLM can (stop 37); typographic renders
(<= ~800 px) and the benchmark's photos (<= 500 px) keep one pass."""
ZOOM_TILE_MARGIN = 32
"""Context (pixels of the zoomed input) each tile of the zoom pass sees beyond the part of
the map taken from it (:meth:`OCR._tiled_prob_map`)."""
MAX_ZOOMS = 3
"""Zoom passes one request may run over all its faces (a transparent image's two, its
colour-distance face) and frames: ~0.4 s each on two cores (stop 37). A face past them is
read at the detection size only, and the request says it was read in part
(``ocr_truncated``)."""
MAX_OCR_BOXES = 48
"""Text boxes recognised per image at most: bounds OCR time (~15 ms a box on one core).
The rewriter reads about 64 tokens of image text per window, so 48 lines cover it."""
REC_BUDGET = 40_000
"""Recognition one request may spend, in line width at the recogniser's 48-pixel height
(each line at least ``rec_min_width``), over all its faces, frames and re-reads: a 3 MB
8-frame APNG of text cost 99 s with a box cap per face alone (stop 35 audit). The
benchmark's typographic renders spend 1,800 (p50; at most 3,800), its real photos 0 (p50;
p90 860, at most 20,000); 40,000 is about 25 full-width lines, 2-4 s on two cores. A page
of small text reaches it and is read in part (most prominent lines first), and says so
(``ocr_truncated``)."""


class RecBudget:
    """What is left of one request's reading, shared by its faces: recognition width
    (``REC_BUDGET``) and zoom passes (``MAX_ZOOMS``)."""

    def __init__(self, width: int = REC_BUDGET, zooms: int = MAX_ZOOMS) -> None:
        self.left = width
        self.zooms = zooms
        self.short = False  # something went unread for want of budget

    def take_zoom(self) -> bool:
        """Whether a zoom pass may run (and it is counted); if not, the read is short."""
        if self.zooms < 1:
            self.short = True
            return False
        self.zooms -= 1
        return True

    def fit(self, costs: Sequence[int], order: Sequence[int]) -> list[int]:
        """The indices (in ``order``, most wanted first) whose costs fit, taken from it."""
        keep = []
        for i in order:
            if costs[i] <= self.left:
                self.left -= costs[i]
                keep.append(i)
            else:
                self.short = True
        return sorted(keep)


REC_BATCH_WIDTH = 960
"""Padded width (pixels at the recogniser's 48-pixel height) one recognition call takes at
most: three minimum-width lines, or one long line alone (see ``OCR._rec_batches``)."""
# A line read with a mean character probability below this is checked for being upside
# down (PP-OCR's angle classifier, then a second read of the flipped crop where it says
# 180 degrees): a text turned over reads as confident-looking garbage (0.7-0.8) and a
# level line usually reads above 0.95, so level text pays nothing.
FLIP_CHECK_SCORE = 0.95
FLIP_MIN_PROB = 0.5  # the classifier's P(180 degrees) from which the flipped crop is read
GARBLED_SCORE = 0.7  # a line read below this is also read flipped, whatever the classifier says
# A line still read below this is also read mirrored (left-right, and top-bottom): mirrored
# text reads as its glyphs' mirror images in reverse order ("ob woH" for "How do"), at a mean
# character probability of about 0.78 where the same line level reads 0.99; a VLM reads
# mirrored text, so the guard must too (stop 34: 10 of 40 mirrored harmful asks caught).
MIRROR_CHECK_SCORE = 0.9
CLS_HEIGHT, CLS_WIDTH = 48, 192  # PP-OCR's angle classifier input (RapidOCR's cls shape)
CLS_CHUNKS = 4  # 192-pixel pieces of one long line the angle classifier reads at most
PathLike = str | os.PathLike[str]
REC_BUCKET_WIDTHS = (320, 480, 640, 960, 1280, 1600)
"""Recogniser input widths on a GPU (see :class:`FixedShapes`): each batch is padded up to the
first that holds it; its batch size is what ``OCR._rec_batches`` can put in that width."""
CLS_BATCH = 8  # angle-classifier pieces per call on a GPU (one fixed shape)


def page_share(rgb: np.ndarray) -> float:
    """The share of a ~64x64 sample of the image taken by its most common colour, each
    channel cut to 4 bits (so JPEG noise on a flat background still counts as one colour)."""
    return page_colour(rgb)[0]


def page_colour(rgb: np.ndarray) -> tuple[float, np.ndarray]:
    """:func:`page_share`, and that most common colour (the mean of its sampled pixels)."""
    h, w = rgb.shape[:2]
    sample = rgb[:: max(1, h // 64), :: max(1, w // 64)]
    s = sample >> 4
    code = (s[..., 0].astype(np.int32) << 8) | (s[..., 1].astype(np.int32) << 4) | s[..., 2]
    counts = np.bincount(code.ravel(), minlength=4096)
    top = int(counts.argmax())
    colour = sample[code == top].mean(axis=0)
    return float(counts[top] / code.size), colour


MAX_FACE_SIDE = 2048  # the colour-distance face is built at most this long (bounded memory)
FACE_MIN_DISTANCE = 32  # a colour distance (of 255) drawn black at the least


def colour_distance_face(rgb: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Each pixel's colour distance from ``colour`` (the page's), as dark ink on white, the
    farthest black: text whose colour differs from the page but not its brightness (green
    on an equally bright grey) shows here, where the detector sees little in the image."""
    h, w = rgb.shape[:2]
    step = max(1, math.ceil(max(h, w) / MAX_FACE_SIDE))
    small = rgb[::step, ::step].astype(np.int16)
    dist = np.abs(small - colour.astype(np.int16)).max(axis=2)
    top = max(int(dist.max()), FACE_MIN_DISTANCE)  # noise on a blank page stays light
    grey = 255 - (dist.astype(np.int32) * 255 // top).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3:
        raise InvalidInputError("expected an HxWx3 uint8 RGB array")
    return rgb


def check_output(name: str, arr: object, shape: Sequence[int | None],
                 lo: float = -1e4, hi: float = 1e4) -> np.ndarray:
    """A model output after checking it can be trusted: the expected shape, finite, in range.

    A model that is broken (corrupt weights, a misbehaving runtime) tends to emit NaN, inf,
    zeros or a constant; each of those would otherwise read as "nothing found" and let the
    request through. ``None`` in ``shape`` accepts any size on that axis.
    """
    if not isinstance(arr, np.ndarray):
        raise GuardError(f"{name}: the model returned {type(arr).__name__}, not an array; "
                         "fail closed")
    if arr.ndim != len(shape) or any(w is not None and d != w
                                     for d, w in zip(arr.shape, shape, strict=True)):
        raise GuardError(f"{name}: output shape {arr.shape}, expected "
                         f"{tuple('?' if w is None else w for w in shape)}; fail closed")
    if arr.size == 0:
        raise GuardError(f"{name}: the model returned an empty output; fail closed")
    if not np.issubdtype(arr.dtype, np.floating):
        raise GuardError(f"{name}: output dtype {arr.dtype} is not floating point; fail closed")
    # min and max carry any NaN (they propagate it) and any inf: two passes over the array
    # where an isfinite mask took a third (the recogniser's output is ~2M values a call)
    least, most = float(arr.min()), float(arr.max())
    if not (math.isfinite(least) and math.isfinite(most)):
        raise GuardError(f"{name}: the model output holds NaN or inf; fail closed")
    if least < lo or most > hi:
        raise GuardError(f"{name}: output values outside [{lo:g}, {hi:g}]; fail closed")
    return arr


def check_distributions(name: str, arr: object, shape: Sequence[int | None]) -> np.ndarray:
    """A softmax output after :func:`check_output`, its last axis rows each summing to one:
    an all-zero or constant output from a broken model would otherwise read as "no text" or
    "level"."""
    probs = check_output(name, arr, shape, lo=-1e-3, hi=1.0 + 1e-3)
    # float32 pairwise sums of values in [0, 1] err by ~1e-6, far inside the tolerance
    if float(np.abs(probs.sum(axis=-1) - 1.0).max()) > 1e-2:
        raise GuardError(f"{name}: output rows are not probability distributions (a broken "
                         "model); fail closed")
    return probs


def check_not_constant(name: str, arr: np.ndarray) -> None:
    """Refuse an output that is one value everywhere (e.g. all zeros): no real input does that."""
    flat = arr.reshape(arr.shape[0], -1)
    if (flat.max(axis=1) == flat.min(axis=1)).any():
        raise GuardError(f"{name}: the model returned a constant output (a broken model); "
                         "fail closed")


def _providers_or_cpu(providers: Sequence[ProviderSpec] | None) -> list[ProviderSpec]:
    return list(providers) if providers else ["CPUExecutionProvider"]


class FixedShapes:
    """One model run at a few fixed input shapes, one ONNX Runtime session each: an input is
    zero-padded (the normalised mid-grey the OCR pads with anyway) up to the first shape
    that holds it, and the caller crops the output back.

    Why: ONNX Runtime's CUDA provider re-plans a session's convolutions whenever its input
    shape changes. On an H100 that cost 0.4 s (detection) to 2.5 s (recognition) a call,
    cached shapes or not, while at one repeated shape detection took 3.6 ms and recognition
    8 ms (``benchmarks/RESULTS.md``, stop 27). Sessions are made and planned at load.
    """

    def __init__(self, model: bytes, providers: Sequence[ProviderSpec], threads: int | None,
                 name: str, shapes: Sequence[tuple[int, ...]]) -> None:
        self.name = name
        self.shapes = sorted({tuple(s) for s in shapes}, key=lambda s: int(np.prod(s)))
        self.sessions: dict[tuple[int, ...], ort.InferenceSession] = {}
        for shape in self.shapes:
            sess = make_session(model, providers, threads, mem_arena=False,
                                name=f"{name} {'x'.join(map(str, shape))}")
            sess.run(None, {sess.get_inputs()[0].name: np.zeros(shape, np.float32)})
            self.sessions[shape] = sess

    def shape_for(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The first fixed shape that holds ``shape`` (None: none does)."""
        return next((s for s in self.shapes
                     if len(s) == len(shape) and all(a <= b for a, b in zip(shape, s,
                                                                            strict=True))),
                    None)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]] | None:
        """The first output for ``x`` padded, and the shape it ran at; None if none holds x."""
        shape = self.shape_for(x.shape)
        if shape is None:
            return None
        padded = np.zeros(shape, np.float32)
        padded[tuple(slice(0, n) for n in x.shape)] = x
        sess = self.sessions[shape]
        return sess.run(None, {sess.get_inputs()[0].name: padded})[0], shape


def probe_image(h: int = 48, w: int = 192) -> np.ndarray:
    """The image every vision model reads once at load: dark bars (a line of "text") on a
    light ground with a colour gradient, so no real model answers it with a constant."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([200 + 55 * x / w, 230 - 30 * y / h, np.full((h, w), 240.0)], axis=2)
    for x0 in range(8, w - 12, 14):  # letter-like strokes on the middle band
        img[h // 4: 3 * h // 4, x0: x0 + 7] = (20, 20, 30)
    return np.ascontiguousarray(img.astype(np.uint8))


def _probe(where: str, fn: Callable[[], object]) -> None:
    """Run ``fn`` (a model reading :func:`probe_image`) at load: a model that cannot read
    it, or answers it with a wrong shape, NaN or a constant, is a ModelLoadError now, not
    a fail-closed error on every image request later."""
    try:
        fn()
    except Exception as exc:  # ONNX Runtime raises its own types; GuardError on bad output
        raise ModelLoadError(f"{where} does not work as this bundle says: {exc}") from exc


# ---------------------------------------------------------------------------- tagger
@dataclass(frozen=True)
class Concept:
    """One ImageNet class name with its softmax probability."""

    label: str
    score: float


@dataclass(frozen=True)
class TagResult:
    """Concepts and the pooled feature from a single forward pass."""

    concepts: list[Concept]
    features: np.ndarray  # (1280,) float32, pre-classifier global-average-pooled


TOP_K = 5  # concepts the tagger reports per image, at most
MIN_SCORE = 0.03  # and only those at least this probable


def top_classes(prob: np.ndarray, k: int = TOP_K, min_score: float = MIN_SCORE) -> list[int]:
    """Indices of the ``k`` most probable classes of one image, at ``min_score`` or above,
    most probable first: the concepts the judge is given (the vision builder measures
    quantised taggers by them too)."""
    return [int(i) for i in np.argsort(-prob)[:k] if prob[i] >= min_score]


class Tagger:
    """EfficientNet-Lite0 ImageNet-1k classifier used as a cheap concept tagger."""

    def __init__(self, bundle_dir: PathLike = DEFAULT_VISION_DIR,
                 providers: Sequence[ProviderSpec] | None = None, threads: int | None = None,
                 k: int = TOP_K, min_score: float = MIN_SCORE) -> None:
        bundle = Bundle.load(Path(bundle_dir))
        spec = bundle.tagger()
        self.size = spec.size
        self.mean = spec.mean
        self.std = spec.std
        self.labels = bundle.read_text(spec.labels).splitlines()
        if not self.labels:
            raise ModelLoadError(f"{bundle.directory}/{spec.labels} holds no labels")
        self.session = make_session(bundle.read(spec.file),
                                    _providers_or_cpu(providers), threads, name=spec.file)
        self.k = k
        self.min_score = min_score
        where = f"{bundle.directory}/{spec.file}"
        width = next((o.shape[-1] for o in self.session.get_outputs() if o.name == "logits"),
                     None)
        if isinstance(width, int) and width != len(self.labels):
            raise ModelLoadError(f"{bundle.directory}/{spec.labels}: {len(self.labels)} "
                                 f"labels, but {spec.file} scores {width} classes")
        # one small image at load: a model of another input size or output, or one that
        # answers NaN or a constant, fails here (~5 ms) rather than on every image
        _probe(where, lambda: self.run([probe_image()]))

    @property
    def providers(self) -> list[str]:
        """Execution providers ONNX Runtime actually runs this model on."""
        return list(self.session.get_providers())

    def run(self, images: Sequence[np.ndarray]) -> list[TagResult]:
        """Tag a batch of RGB images with one inference call."""
        if not images:
            return []
        x = np.stack([resize_normalize(_check_rgb(im), self.size, self.size, self.mean,
                                       self.std) for im in images])
        logits, feats = self.session.run(["logits", "features"], {"pixels": x})
        n = len(images)
        logits = check_output("tagger logits", logits, (n, len(self.labels)))
        feats = check_output("tagger features", feats, (n, None))
        check_not_constant("tagger logits", logits)
        logits = logits.astype(np.float64)
        z = logits - logits.max(axis=1, keepdims=True)
        prob = np.exp(z)
        prob /= prob.sum(axis=1, keepdims=True)
        out = []
        for p, f in zip(prob, feats, strict=True):
            cs = [Concept(self.labels[i], float(p[i]))
                  for i in top_classes(p, self.k, self.min_score)]
            out.append(TagResult(cs, f.astype(np.float32)))
        return out

    def tag(self, rgb: np.ndarray) -> TagResult:
        """Concepts + pooled feature for one image (one inference)."""
        return self.run([rgb])[0]

    def tag_batch(self, images: Sequence[np.ndarray]) -> list[list[Concept]]:
        """Top-k concepts for each image of a batch."""
        return [r.concepts for r in self.run(images)]

    def features(self, rgb: np.ndarray) -> np.ndarray:
        """Pooled 1280-d feature only (prefer :meth:`tag` to get both)."""
        return self.tag(rgb).features

    def __call__(self, rgb: np.ndarray) -> list[Concept]:
        return self.tag(rgb).concepts


# ---------------------------------------------------------------------------- OCR
class OCR:
    """PP-OCR text detection (DB) + recognition (CTC), NumPy post-processing only.

    Mirrors RapidOCR 3.x defaults (BGR channel order, mean/std 0.5, DB thresholds 0.3/0.5,
    unclip 1.6, rec height 48, text score 0.5). Boxes are axis-aligned, except for clearly
    slanted lines (2-85 degrees), which are read through a crop rotated level (a line
    between 60 and 85 degrees was read neither way: its tall, squarish axis-aligned box is
    dropped as texture). A line's box
    score is the mean of its own pixels, as RapidOCR scores the line's rotated box: the mean
    over its axis-aligned box would drop a line tilted a few degrees (a note, a photographed
    page), which fills only part of that box.
    """

    def __init__(self, bundle_dir: PathLike = DEFAULT_VISION_DIR,
                 providers: Sequence[ProviderSpec] | None = None, threads: int | None = None,
                 det_limit_side: int = DET_LIMIT_SIDE, det_thresh: float = 0.3,
                 box_thresh: float = 0.5,
                 unclip_ratio: float = 1.6, text_score: float = 0.5, rec_batch: int = 8,
                 rec_batch_width: int = REC_BATCH_WIDTH, max_rec_width: int = 1600,
                 max_candidates: int = 1000,
                 max_boxes: int = MAX_OCR_BOXES, text_gate: bool = True,
                 gate_scale: float | None = None, gate_thresh: float | None = None,
                 fixed_shapes: bool | None = None, zoom_side: int = ZOOM_SIDE) -> None:
        bundle = Bundle.load(Path(bundle_dir))
        spec = bundle.ocr()
        given = gate_scale is not None or gate_thresh is not None
        try:
            gate_scale = float(gate_scale if gate_scale is not None else
                               spec.gate_scale if spec.gate_scale is not None else GATE_SCALE)
            gate_thresh = float(gate_thresh if gate_thresh is not None else
                                spec.gate_threshold if spec.gate_threshold is not None
                                else GATE_THRESH)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{bundle.directory}/manifest.json: malformed ocr entry: {exc}"
                                 ) from exc
        if not isinstance(max_boxes, int) or max_boxes < 1:
            raise InvalidInputError(f"max_boxes must be a positive int, got {max_boxes!r}")
        if not isinstance(zoom_side, int) or isinstance(zoom_side, bool) or zoom_side < 0:
            raise InvalidConfigError(f"zoom_side must be an int >= 0 (0: no zoom pass), "
                                     f"got {zoom_side!r}")
        if not (0.0 < gate_scale <= 1.0 and 0.0 < gate_thresh < det_thresh):
            where = "OCR arguments" if given else f"{bundle.directory}/manifest.json"
            raise (InvalidConfigError if given else ModelLoadError)(
                f"{where}: text gate: scale {gate_scale!r} must be in (0, 1] and threshold "
                f"{gate_thresh!r} in (0, {det_thresh}): a gate stricter than detection would "
                "skip text it can read")
        provs = _providers_or_cpu(providers)
        det_model, rec_model = bundle.read(spec.det_file), bundle.read(spec.rec_file)
        cls_model = bundle.read(spec.cls_file) if spec.cls_file else None
        self.det = make_session(det_model, provs, threads, mem_arena=False, name=spec.det_file)
        self.rec = make_session(rec_model, provs, threads, mem_arena=False, name=spec.rec_file)
        self.cls = (make_session(cls_model, provs, threads, mem_arena=False,
                                 name=spec.cls_file) if cls_model is not None else None)
        # RapidOCR: blank at index 0, the file's characters, then a space at the end
        chars = bundle.read_text(spec.keys_file).split("\n")
        if chars and chars[-1] == "":
            chars = chars[:-1]
        self.charset = np.array(["", *chars, " "], dtype=object)
        classes = self.rec.get_outputs()[0].shape[-1]
        if not chars or (isinstance(classes, int) and classes != len(self.charset)):
            # else every request with text would fail closed (or read the wrong letters)
            raise ModelLoadError(f"{bundle.directory}/{spec.keys_file}: {len(chars)} "
                                 f"characters, but {spec.rec_file} scores {classes} classes "
                                 "(characters + blank + space)")
        self.det_limit_side = det_limit_side
        self.det_thresh = det_thresh
        self.box_thresh = box_thresh
        self.unclip_ratio = unclip_ratio
        self.text_score = text_score
        self.rec_batch = rec_batch
        self.rec_batch_width = rec_batch_width
        self.max_rec_width = max_rec_width
        self.max_candidates = max_candidates
        self.max_boxes = max_boxes
        self.rec_height = 48
        self.rec_min_width = 320  # RapidOCR pads every line to at least this width
        self.rec_calls = 0  # recognition batches run; lets tests see rec was skipped
        self.text_gate = bool(text_gate)
        self.gate_scale = gate_scale
        self.gate_thresh = gate_thresh
        # diagnostics, shared by every call (so only ever written here, never read back):
        self.gate_runs = 0  # gate passes run, and how many of them skipped full detection
        self.gate_skips = 0
        self.page_bypasses = 0  # page-like images sent straight to full detection
        self.last_gate_max: float | None = None  # the last gate map's max (None: no gate)
        self.zoom_side = zoom_side
        self.zoom_runs = 0  # zoom passes run (see detect)
        # On a GPU (the detector really running on one, unless told): fixed input shapes
        if fixed_shapes is None:
            fixed_shapes = self.det.get_providers()[0] in GPU_PROVIDERS
        self.fixed: dict[str, FixedShapes] = {}
        if fixed_shapes:
            side = -(-det_limit_side // 32) * 32
            gate = max(32, -(-int(side * gate_scale) // 32) * 32)
            zoom = [(1, 3, t, t) for t in [side + 2 * ZOOM_TILE_MARGIN] if zoom_side > side]
            self.fixed["det"] = FixedShapes(det_model, provs, threads, spec.det_file,
                                            [(1, 3, gate, gate), (1, 3, side, side), *zoom])
            # a batch's size at its width, as _rec_batches allows: the budget over the
            # narrowest width the bucket takes (the bucket before it, plus one pixel)
            lows = (self.rec_min_width - 1, *REC_BUCKET_WIDTHS[:-1])
            rec = [(max(1, min(rec_batch, rec_batch_width // (lo + 1))), 3, self.rec_height, w)
                   for lo, w in zip(lows, REC_BUCKET_WIDTHS, strict=True)
                   if w <= max_rec_width]
            self.fixed["rec"] = FixedShapes(rec_model, provs, threads, spec.rec_file, rec)
            if cls_model is not None:
                self.fixed["cls"] = FixedShapes(cls_model, provs, threads,
                                                spec.cls_file or "cls",
                                                [(CLS_BATCH, 3, CLS_HEIGHT, CLS_WIDTH)])
        self._probe_models(str(bundle.directory), spec)

    def _probe_models(self, directory: str, spec: OcrSpec) -> None:
        """Read one small line of "text" with each model at load (~20 ms in all): a detector,
        recogniser or angle classifier that is another model, of another input or output
        shape, or that answers NaN or a constant, is a ModelLoadError here rather than a
        fail-closed error on every image request. A bundle without an angle classifier (older
        bundles list none) loads, with a warning: upside-down text is then read only as it
        stands."""
        img = probe_image()
        _probe(f"{directory}/{spec.det_file}",
               lambda: self._prob_map(self._det_input(img), "OCR detector"))
        _probe(f"{directory}/{spec.rec_file}",
               lambda: self._check_rec(self._run("rec", self.rec, self.rec_input([img])), 1))
        if self.cls is not None:
            _probe(f"{directory}/{spec.cls_file}", lambda: self.turned_over([img]))
        else:
            log.warning("%s/manifest.json lists no OCR angle classifier (ocr.cls): text "
                        "turned upside down is not read again turned over", directory)

    @property
    def providers(self) -> list[str]:
        """Execution providers ONNX Runtime actually runs the detector on."""
        return list(self.det.get_providers())

    def _run(self, model: str, session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
        """The model's first output for ``x``, cropped back to ``x``'s own part where it ran
        at a fixed shape on a GPU (the batch's rows; for the detector its map's height and
        width, for the recogniser its time steps, one per 8 pixels of width). An input no
        fixed shape holds runs as it is. Stateless: threads share one OCR."""
        fixed = self.fixed.get(model)
        ran = fixed.run(x) if fixed is not None else None
        if ran is None:
            out: np.ndarray = session.run(None, {session.get_inputs()[0].name: x})[0]
            return out
        full, shape = ran
        if model == "det":
            return full[:, :, :x.shape[2], :x.shape[3]]
        if model == "rec":
            return full[:x.shape[0], :full.shape[1] * x.shape[3] // shape[3]]
        return full[:x.shape[0]]

    # -- detection
    def _det_size(self, h: int, w: int, scale: float = 1.0) -> tuple[int, int]:
        """Detector input (height, width): long side at most ``det_limit_side`` (never
        upscaled), times ``scale``, each rounded to a multiple of 32."""
        ratio = min(1.0, self.det_limit_side / max(h, w)) * scale
        return (max(32, int(round(int(h * ratio) / 32) * 32)),
                max(32, int(round(int(w * ratio) / 32) * 32)))

    def _det_input(self, rgb: np.ndarray, scale: float = 1.0) -> np.ndarray:
        rh, rw = self._det_size(rgb.shape[0], rgb.shape[1], scale=scale)
        x = resize_normalize(rgb, rh, rw, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        return np.ascontiguousarray(x[::-1])[None]  # PP-OCR was trained on BGR

    def _prob_map(self, x: np.ndarray, name: str, whole: bool = True) -> np.ndarray:
        """DB's probability map for ``x`` (checked; ``whole`` False: a tile of a larger
        input, which may be flat where the whole is not, so the caller checks that)."""
        out = self._run("det", self.det, x)
        # DB's probability map: one channel at the input's size, sigmoid-valued
        out = check_output(name, out, (1, 1, x.shape[2], x.shape[3]), lo=-1e-3, hi=1.0 + 1e-3)
        if whole:
            check_not_constant(name, out)
        prob: np.ndarray = out[0, 0]
        return prob

    def gate_applies(self, h: int, w: int) -> bool:
        """Whether the gate runs for an image of this size: enabled, and the reduced pass is
        really smaller than full detection (on small images it would only add work)."""
        if not self.text_gate or self.gate_scale >= 1.0:
            return False
        full = self._det_size(h, w)
        gate = self._det_size(h, w, self.gate_scale)
        return max(full) >= GATE_MIN_SIDE and gate[0] * gate[1] < full[0] * full[1]

    def gate(self, rgb: np.ndarray) -> float:
        """The max of the detector's probability map at ``gate_scale`` of the detection size.

        Below ``gate_thresh`` nothing in the image looks like text even to a low bar, and
        :meth:`detect` returns no boxes without the full pass. A broken map (NaN, constant,
        wrong shape) raises :class:`GuardError`, as full detection does: never "no text".
        """
        rgb = _check_rgb(rgb)
        prob = self._prob_map(self._det_input(rgb, self.gate_scale), "OCR text gate")
        return float(prob.max())

    def zoom_applies(self, h: int, w: int) -> bool:
        """Whether an image of this size gets the zoom pass (see :data:`ZOOM_SIDE`)."""
        return max(h, w) > ZOOM_MIN_SIDE and self.zoom_side > self.det_limit_side

    def detect(self, rgb: np.ndarray, budget: RecBudget | None = None
               ) -> list[tuple[tuple[int, int, int, int], float]]:
        """Axis-aligned text boxes (x0, y0, x1, y1) in image pixels with DB box scores.

        With the text gate on, a reduced pass runs first and full detection only where it
        sees anything that may be text (see :meth:`gate`); a page-like image (see
        :data:`PAGE_SHARE`) goes straight to full detection. A large image (see
        :meth:`zoom_applies`) skips the gate and is always zoomed too (:meth:`_zoomed`),
        within ``budget``'s zoom passes (if given). Nothing cheaper can rule its small text
        out: the gate's pass, at a quarter of the zoom's scale, cannot see it, and the map at
        the detection size peaked above the gate's bar on all 40 ImageNet photos tried at
        2,048 px (and on a flat grey image).
        """
        rgb = _check_rgb(rgb)
        src_h, src_w = rgb.shape[:2]
        self.last_gate_max = None
        zoom = self.zoom_applies(src_h, src_w)
        gated = not zoom and self.gate_applies(src_h, src_w)
        if gated and page_share(rgb) >= PAGE_SHARE:
            self.page_bypasses += 1
        elif gated:
            self.gate_runs += 1
            # decided on this call's own value: the attribute is shared by concurrent calls
            # (another request's gate may overwrite it between two lines; stop 37 audit 5)
            self.last_gate_max = top = self.gate(rgb)
            if not top >= self.gate_thresh:  # NaN can't get here; be explicit
                self.gate_skips += 1
                return []
        prob = self._prob_map(self._det_input(rgb), "OCR detector")
        boxes = self._db_boxes(prob, src_h, src_w)
        if zoom and (budget is None or budget.take_zoom()):
            boxes = self._zoomed(rgb, boxes)
        return stacked_columns(boxes)

    def _zoomed(self, rgb: np.ndarray, boxes: list[tuple[tuple[int, int, int, int], float]]
                ) -> list[tuple[tuple[int, int, int, int], float]]:
        """The boxes of a detection pass at ``zoom_side`` (never above the image's own
        size), and those of ``boxes`` (the pass at the detection size) that no zoomed box
        mostly covers: the finer pass boxes small text more tightly, the coarser one may
        still hold a line too large for the finer pass."""
        self.zoom_runs += 1
        h, w = rgb.shape[:2]
        scale = min(self.zoom_side, max(h, w)) / self.det_limit_side
        fine = self._db_boxes(self._tiled_prob_map(self._det_input(rgb, scale), "OCR zoom pass"),
                              h, w)
        return fine + [b for b in boxes if not any(covers(f[0], b[0]) for f in fine)]

    def _tiled_prob_map(self, x: np.ndarray, name: str) -> np.ndarray:
        """:meth:`_prob_map` of a large input run a tile at a time: each tile a core of the
        detection size with ``ZOOM_TILE_MARGIN`` pixels of context round it, each map pixel
        taken from the tile whose core holds it. The detector's working memory is then a
        tile's, not the whole input's (a 1,280-pixel pass in one piece added ~250 MB of
        peak memory), for ~10 % more pixels run."""
        _, _, height, width = x.shape
        core, m = -(-self.det_limit_side // 32) * 32, ZOOM_TILE_MARGIN
        if max(height, width) <= core + m:
            return self._prob_map(x, name)
        prob = np.empty((height, width), np.float32)
        for y0 in range(0, height, core):
            for x0 in range(0, width, core):
                ty, tx = max(0, y0 - m), max(0, x0 - m)
                y1, x1 = min(height, y0 + core), min(width, x0 + core)
                tile = np.ascontiguousarray(x[:, :, ty:min(height, y1 + m), tx:min(width, x1 + m)])
                prob[y0:y1, x0:x1] = self._prob_map(tile, name, whole=False)[
                    y0 - ty:y1 - ty, x0 - tx:x1 - tx]
        check_not_constant(name, prob[None])
        return prob

    def _db_boxes(self, prob: np.ndarray, src_h: int, src_w: int
                  ) -> list[tuple[tuple[int, int, int, int], float]]:
        ph, pw = prob.shape
        seg = prob > self.det_thresh
        if not seg.any():
            return []
        mask = seg.copy()  # 2x2 dilation (RapidOCR use_dilation), anchor at the bottom-right
        mask[1:] |= seg[:-1]
        mask[:, 1:] |= seg[:, :-1]
        mask[1:, 1:] |= seg[:-1, :-1]
        rows, x0s, x1s, labels, n = components(mask)
        if n == 0:
            return []
        big = np.iinfo(np.int64).max
        xmin = np.full(n, big)
        ymin = np.full(n, big)
        xmax = np.full(n, -1)
        ymax = np.full(n, -1)
        np.minimum.at(xmin, labels, x0s)
        np.maximum.at(xmax, labels, x1s - 1)
        np.minimum.at(ymin, labels, rows)
        np.maximum.at(ymax, labels, rows)
        integ = np.zeros((ph + 1, pw + 1), dtype=np.float64)
        integ[1:, 1:] = prob.astype(np.float64).cumsum(0).cumsum(1)
        slant = slants(integ, rows, x0s, x1s, labels, n)
        out: list[tuple[tuple[int, int, int, int], float]] = []
        by_label: np.ndarray | None = None  # runs sorted by component, made once if needed
        bounds = np.zeros(0, np.int64)
        curves = 0
        for i in range(min(n, self.max_candidates)):
            bw, bh = xmax[i] - xmin[i], ymax[i] - ymin[i]
            if min(bw, bh) < 3:  # RapidOCR min_size on the contour's box
                continue
            sl = slant[i]
            if curves < MAX_CURVES and sl[5] >= self.box_thresh \
                    and sl[6] < CURVE_MAX_FILL * sl[3] * sl[4]:
                if by_label is None:
                    by_label = np.argsort(labels, kind="stable")
                    bounds = np.searchsorted(labels[by_label], np.arange(n + 1))
                curves += 1
                runs = by_label[bounds[i]: bounds[i + 1]]
                bent = self._curve_box(rows[runs], x0s[runs], x1s[runs], sl, pw, ph,
                                       src_w, src_h)
                if bent is not None:
                    out.append(bent)
                    continue
            rot = self._rotated_box(sl, pw, ph, src_w, src_h)
            if rot is not None:
                out.append(rot)
                continue
            score = float(slant[i, 5])
            if score < self.box_thresh:
                continue
            d = bw * bh * self.unclip_ratio / (2.0 * (bw + bh))  # DB unclip on the rectangle
            if min(bw, bh) + 2 * d < 5:
                continue
            bx0 = int(np.clip(round((xmin[i] - d) / pw * src_w), 0, src_w - 1))
            bx1 = int(np.clip(round((xmax[i] + d) / pw * src_w), 0, src_w - 1))
            by0 = int(np.clip(round((ymin[i] - d) / ph * src_h), 0, src_h - 1))
            by1 = int(np.clip(round((ymax[i] + d) / ph * src_h), 0, src_h - 1))
            if bx1 - bx0 <= 3 or by1 - by0 <= 3:
                continue
            tall = by1 - by0
            if tall > 0.25 * src_h and tall / ROTATED_MIN_ELONGATION < bx1 - bx0 < 2 * tall \
                    and bh < COLUMN_MIN_ELONGATION * bw:
                continue  # a tall, squarish blob is texture; a tall, thin one a vertical line

            out.append(((bx0, by0, bx1, by1), score))
        return out

    def _curve_box(self, rows: np.ndarray, x0s: np.ndarray, x1s: np.ndarray, sl: np.ndarray,
                   pw: int, ph: int, src_w: int, src_h: int) -> DetBox | None:
        """A bent line (one component's runs; see :data:`CURVE_MAX_FILL`) as a box read
        along its centre line, or None where the component is not a long, clearly bent
        band (it is then read the straight way)."""
        line = centre_line(rows, x0s, x1s, sl)
        if line is None:
            return None
        pts, thick, bend = line
        seg = np.hypot(*np.diff(pts, axis=0).T)
        length = float(seg.sum())
        if thick <= 0 or length < CURVE_MIN_LENGTH * thick or bend < CURVE_MIN_BEND:
            return None
        d = length * thick * self.unclip_ratio / (2.0 * (length + thick))  # DB unclip
        # each end carries on along its last piece by half a bin and the unclip distance
        ends = []
        for a, b in ((pts[0], pts[1]), (pts[-1], pts[-2])):
            step = a - b
            ends.append(a + step / max(float(np.hypot(*step)), 1e-6) * (d + thick / 2))
        pts = np.vstack([ends[0], pts, ends[1]])
        sx, sy = src_w / pw, src_h / ph
        pts = pts * np.array([sx, sy])
        height = (thick + 2 * d) * (sx + sy) / 2
        if height < 5:
            return None
        half = height / 2
        box = (int(max(0, pts[:, 0].min() - half)), int(max(0, pts[:, 1].min() - half)),
               int(min(src_w - 1, pts[:, 0].max() + half)),
               int(min(src_h - 1, pts[:, 1].max() + half)))
        if box[2] - box[0] <= 3 or box[3] - box[1] <= 3:
            return None
        return DetBox(box, float(sl[5]), curve=Curve(pts, height))

    def _rotated_box(self, sl: np.ndarray, pw: int, ph: int, src_w: int, src_h: int
                     ) -> DetBox | None:
        """A slanted line (see :func:`slants`) as a box read through a rotated crop, or
        None for a near-horizontal or blob-like component (read the axis-aligned way)."""
        cx, cy, angle, length, thick, score = (float(v) for v in sl[:6])
        if length < ROTATED_MIN_ELONGATION * thick or score < self.box_thresh:
            return None
        # the map is scaled apart in x and y (each side rounded to a multiple of 32: a
        # 112 px tall line image is mapped 128 tall), so the line's angle and length in the
        # image are its own, not the map's: a long line's ends were cut off, and its slant
        # overstated (s37 tilt)
        sx, sy = src_w / pw, src_h / ph
        rad = math.radians(angle)
        ux, uy = math.cos(rad) * sx, math.sin(rad) * sy
        along = math.hypot(ux, uy)  # image pixels per map pixel along the line
        across = sx * sy / along  # ... and across it (area kept)
        angle = math.degrees(math.atan2(uy, ux))
        if not reads_rotated(angle, length * along, thick * across):
            return None
        d = length * thick * self.unclip_ratio / (2.0 * (length + thick))  # DB unclip
        geom = (cx * sx, cy * sy, angle, (length + 2 * d) * along, (thick + 2 * d) * across)
        c, s_ = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        hx, hy = (geom[3] * c + geom[4] * s_) / 2, (geom[3] * s_ + geom[4] * c) / 2
        box = (int(max(0, geom[0] - hx)), int(max(0, geom[1] - hy)),
               int(min(src_w - 1, geom[0] + hx)), int(min(src_h - 1, geom[1] + hy)))
        if geom[4] < 5 or box[2] - box[0] <= 3 or box[3] - box[1] <= 3:
            return None
        return DetBox(box, score, geom)

    # -- recognition
    def recognize(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """CTC-greedy text and mean char probability for each RGB line crop."""
        res: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        ratios = [c.shape[1] / max(c.shape[0], 1) for c in crops]
        order = np.argsort(ratios)  # similar widths share a batch, as in RapidOCR
        for idx in self._rec_batches(order, ratios):
            x = self.rec_input([crops[i] for i in idx])
            self.rec_calls += 1
            probs = self._run("rec", self.rec, x)
            probs = self._check_rec(probs, len(idx))
            for j, i in enumerate(idx):
                res[i] = self._ctc(probs[j])
        return res

    def rec_cost(self, crop: np.ndarray) -> int:
        """A crop's share of a recognition budget: its padded width at 48 pixels high."""
        ratio = crop.shape[1] / max(crop.shape[0], 1)
        return min(max(int(math.ceil(self.rec_height * ratio)), self.rec_min_width),
                   self.max_rec_width)

    def upright(self, crops: Sequence[np.ndarray], texts: Sequence[tuple[str, float]],
                budget: RecBudget | None = None
                ) -> tuple[list[tuple[str, float]], list[bool]]:
        """``texts`` with each line that was read upside down read again, turned over, and
        which lines that was.

        Text turned 180 degrees (or 90 the other way from what :meth:`crops` expects) is
        read as garbage, so a typographic attack printed upside down or sideways would pass
        unread. Only lines read with doubt (below ``FLIP_CHECK_SCORE``) are checked; the
        angle classifier picks those that look turned over, and any line read as garbage
        (below ``GARBLED_SCORE``) is tried too; the flipped reading is kept only where it
        reads more confidently than the first. Lines still in doubt are then tried mirrored
        (:meth:`_unmirrored`).
        """
        out = list(texts)
        flipped = [False] * len(texts)
        doubt = [i for i, (_, score) in enumerate(texts) if score < FLIP_CHECK_SCORE]
        if self.cls is not None and doubt:
            p180 = self.turned_over([crops[i] for i in doubt])
            # the classifier misses some fonts turned over (an italic script: P 0.35), which
            # then read as garbage
            self._read_again(crops, out, flipped, lambda c: c[::-1, ::-1], True, [
                i for i, p in zip(doubt, p180, strict=True)
                if p >= FLIP_MIN_PROB or texts[i][1] < GARBLED_SCORE], budget)
        return self._unmirrored(crops, out, flipped, budget), flipped

    def _unmirrored(self, crops: Sequence[np.ndarray], texts: list[tuple[str, float]],
                    flipped: list[bool], budget: RecBudget | None = None
                    ) -> list[tuple[str, float]]:
        """``texts`` with each line still read below ``MIRROR_CHECK_SCORE`` read again
        mirrored left-right, then each line still below it mirrored top-bottom (in place:
        ``flipped`` marks a top-bottom mirror, whose lines run bottom to top like a page
        turned over); the more confident reading is kept. Level text reads above that
        score, so it pays nothing, and a line the first mirror reads is not read a third
        time."""
        for view, top_bottom in ((lambda c: c[:, ::-1], False), (lambda c: c[::-1, :], True)):
            self._read_again(crops, texts, flipped, view, top_bottom, [
                i for i, (_, score) in enumerate(texts) if score < MIRROR_CHECK_SCORE], budget)
        return texts

    def _read_again(self, crops: Sequence[np.ndarray], texts: list[tuple[str, float]],
                    flipped: list[bool], view: Callable[[np.ndarray], np.ndarray],
                    turned: bool, lines: list[int], budget: RecBudget | None = None) -> None:
        """Read ``lines`` again through ``view`` of their crops (in place): a more confident
        reading replaces the first, and marks the line ``turned`` (its text runs bottom to
        top) or not. With a ``budget``, the least confident lines go first."""
        if budget is not None and lines:
            lines = budget.fit([self.rec_cost(c) for c in crops],
                               sorted(lines, key=lambda i: texts[i][1]))
        if not lines:
            return
        again = self.recognize([np.ascontiguousarray(view(crops[i])) for i in lines])
        for i, (text, score) in zip(lines, again, strict=True):
            if score > texts[i][1]:
                texts[i], flipped[i] = (text, score), turned

    def turned_over(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """P(the line is upside down) per crop, from PP-OCR's angle classifier.

        The classifier reads 48x192 pixels. RapidOCR squeezes a longer line into that, which
        on a long line leaves too little to tell (a 15:1 line turned over read 0.31); here a
        long line is read as up to ``CLS_CHUNKS`` level 192-pixel pieces and their
        probabilities are averaged.
        """
        assert self.cls is not None
        pieces: list[np.ndarray] = []
        owner: list[int] = []
        for j, crop in enumerate(crops):
            ratio = crop.shape[1] / max(crop.shape[0], 1)
            rw = max(1, min(CLS_WIDTH * CLS_CHUNKS, int(math.ceil(CLS_HEIGHT * ratio))))
            line = resize_normalize(crop, CLS_HEIGHT, rw, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
            n = max(1, min(CLS_CHUNKS, math.ceil(rw / CLS_WIDTH)))
            for start in np.linspace(0, max(rw - CLS_WIDTH, 0), n).astype(int):
                piece = np.zeros((3, CLS_HEIGHT, CLS_WIDTH), dtype=np.float32)
                part = line[::-1, :, start: start + CLS_WIDTH]  # BGR, as PP-OCR was trained
                piece[:, :, : part.shape[2]] = part
                pieces.append(piece)
                owner.append(j)
        batch = np.stack(pieces)
        if "cls" in self.fixed:  # a GPU: CLS_BATCH pieces a call, padded
            probs = np.concatenate([self._run("cls", self.cls, batch[i:i + CLS_BATCH])
                                    for i in range(0, len(batch), CLS_BATCH)])
        else:
            probs = self.cls.run(None, {self.cls.get_inputs()[0].name: batch})[0]
        probs = check_distributions("OCR angle classifier", probs, (len(pieces), 2))
        total = np.zeros(len(crops))
        np.add.at(total, owner, probs[:, 1])
        return total / np.bincount(owner, minlength=len(crops))

    def rec_input(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """One recognition batch: each crop resized to the recogniser's height, BGR, and
        padded with mid-grey to the widest (at least ``rec_min_width``, as RapidOCR)."""
        hgt = self.rec_height
        ratios = [c.shape[1] / max(c.shape[0], 1) for c in crops]
        max_ratio = max(self.rec_min_width / hgt, *ratios)
        width = min(int(math.ceil(hgt * max_ratio)), self.max_rec_width)
        x = np.zeros((len(crops), 3, hgt, width), dtype=np.float32)  # 0 == mid-grey pad
        for j, (crop, ratio) in enumerate(zip(crops, ratios, strict=True)):
            rw = max(1, min(width, int(math.ceil(hgt * ratio))))
            x[j, :, :, :rw] = resize_normalize(crop, hgt, rw, (0.5, 0.5, 0.5),
                                               (0.5, 0.5, 0.5))[::-1]
        return x

    def _rec_batches(self, order: np.ndarray, ratios: Sequence[float]) -> list[list[int]]:
        """Batches of at most ``rec_batch`` crops whose widths differ by at most 2x and whose
        padded widths add up to at most ``rec_batch_width`` pixels.

        Every crop in a batch is padded to the widest, so mixing a "1." with a long line
        would make the short crop cost as much as the long one. The width budget bounds a
        call's memory: the recogniser's output holds a row over the whole charset (18k) for
        every 8 pixels of width, so eight long lines in one batch took ~100 MB more at peak than
        the same lines two at a time, for no speed (measured on 2 cores, typographic renders).
        """
        floor = self.rec_min_width / self.rec_height
        batches: list[list[int]] = []
        for i in order:  # ascending width: the crop added last is a batch's widest
            r = max(ratios[i], floor)
            width = min(self.rec_height * r, self.max_rec_width)
            if batches and len(batches[-1]) < self.rec_batch and \
                    r <= 2 * max(ratios[batches[-1][0]], floor) and \
                    (len(batches[-1]) + 1) * width <= self.rec_batch_width:
                batches[-1].append(int(i))
            else:
                batches.append([int(i)])
        return batches

    def _check_rec(self, probs: object, n: int) -> np.ndarray:
        """CTC recogniser output: (n, steps, charset) softmax rows, each summing to one."""
        return check_distributions("OCR recogniser", probs, (n, None, len(self.charset)))

    def _ctc(self, p: np.ndarray) -> tuple[str, float]:
        ids = p.argmax(axis=1)
        conf = p.max(axis=1)
        keep = ids != 0
        keep[1:] &= ids[1:] != ids[:-1]
        if not keep.any():
            return "", 0.0
        return "".join(self.charset[ids[keep]]), float(conf[keep].mean())

    def __call__(self, rgb: np.ndarray) -> list[OcrLine]:
        """Text lines in reading order; [] (and no recognition run) when nothing is found."""
        boxes = self.detect(rgb)
        return self.read(rgb, boxes) if boxes else []

    def read(self, rgb: np.ndarray, boxes: Sequence[tuple[tuple[int, int, int, int], float]]
             ) -> list[OcrLine]:
        """Recognise the given detected boxes (lets a caller time or skip the two stages).

        At most ``max_boxes`` are read (see :meth:`read_capped`).
        """
        return self.read_capped(rgb, boxes)[0]

    def select(self, boxes: Sequence[tuple[tuple[int, int, int, int], float]]
               ) -> tuple[list[tuple[tuple[int, int, int, int], float]], bool]:
        """The boxes worth reading, at most ``max_boxes``, and whether any were left out.

        Recognition costs about 15 ms per box on one core, so an image covered in words would
        otherwise cost seconds. When capped, the most prominent text is kept: the tallest
        lines first (what a reader, or a VLM, sees first), ties broken by the detector's
        score. The caller is told (``truncated``) so it never mistakes a partial read for a
        full one.
        """
        boxes = list(boxes)
        if len(boxes) <= self.max_boxes:
            return boxes, False
        keep = sorted(prominence(boxes)[: self.max_boxes])
        return [boxes[i] for i in keep], True

    def read_capped(self, rgb: np.ndarray,
                    boxes: Sequence[tuple[tuple[int, int, int, int], float]],
                    budget: RecBudget | None = None) -> tuple[list[OcrLine], bool]:
        """Recognised lines in reading order, and whether the box cap (or the request's
        recognition ``budget``, most prominent lines first) left some unread."""
        rgb = _check_rgb(rgb)
        if not boxes:
            return [], False
        boxes, truncated = self.select(boxes)
        crops = self.crops(rgb, boxes)
        if budget is not None:
            fits = budget.fit([self.rec_cost(c) for c in crops], prominence(boxes))
            truncated = truncated or len(fits) < len(boxes)
            boxes, crops = [boxes[i] for i in fits], [crops[i] for i in fits]
            if not boxes:
                return [], truncated
        stacked, texts = self._stacked(boxes, crops, budget)
        texts, flipped = self.upright(crops, texts, budget)
        truncated = truncated or (budget is not None and budget.short)
        kept = [i for i, (t, s) in enumerate(texts)
                if s >= self.text_score and len(t.strip()) >= 2]  # lone glyphs are noise
        lines = [OcrLine(texts[i][0].strip(), texts[i][1], boxes[i][0]) for i in kept]
        # Lines are put in order in the frame of the text, not of the image: a page turned
        # upside down is read from its (now bottom) first line, one turned sideways column by
        # column. The turn most lines share decides.
        turns = Counter(line_turn(boxes[i], flipped[i], stacked[i]) for i in kept)
        turn = max(sorted(turns), key=lambda t: (turns[t], t == 0), default=0)
        return reading_order(lines, turn, rgb.shape[1], rgb.shape[0]), truncated

    def _stacked(self, boxes: Sequence[tuple[tuple[int, int, int, int], float]],
                 crops: list[np.ndarray], budget: RecBudget | None = None
                 ) -> tuple[list[bool], list[tuple[str, float]]]:
        """Each line's reading, and which vertical lines are upright letters stacked (in
        place: such a line's crop becomes its letters side by side, see :func:`restack`).

        A vertical box whose ink falls into letter cells is read that way first; only where
        that reading is in doubt (below ``FLIP_CHECK_SCORE``) is the column also read turned
        a quarter, and the more confident reading kept. A line of text turned sideways does
        not fall into letter cells, so it is read once, as before.
        """
        stacked = [False] * len(boxes)
        turned: dict[int, np.ndarray] = {}
        for i, det in enumerate(boxes):
            if is_vertical(det):
                side = restack(np.rot90(crops[i], -1))
                if side is not None:
                    turned[i], crops[i], stacked[i] = crops[i], side, True
        texts = self.recognize(crops)
        doubt = [i for i in turned if texts[i][1] < FLIP_CHECK_SCORE]
        if budget is not None and doubt:  # the surest readings are the first left out
            costs = [self.rec_cost(turned[i]) if i in turned else 0 for i in range(len(crops))]
            doubt = budget.fit(costs, sorted(doubt, key=lambda i: texts[i][1]))
        if doubt:
            again = self.recognize([turned[i] for i in doubt])
            for i, (text, score) in zip(doubt, again, strict=True):
                if score > texts[i][1]:
                    crops[i], texts[i], stacked[i] = turned[i], (text, score), False
        return stacked, texts

    @staticmethod
    def crops(rgb: np.ndarray, boxes: Sequence[tuple[tuple[int, int, int, int], float]]
              ) -> list[np.ndarray]:
        """The line images recognition reads: a slanted line straightened, a vertical one
        turned (as RapidOCR), any other its axis-aligned box."""
        out = []
        fill: tuple[int, ...] | None = None  # the median costs ~10-25 ms: once per image
        for det in boxes:
            (x0, y0, x1, y1), _ = det
            curve = getattr(det, "curve", None)
            if curve is not None:
                fill = median_colour(rgb) if fill is None else fill
                out.append(curved_crop(rgb, curve, fill))
                continue
            geom = getattr(det, "rotated", None)
            if geom is not None:
                fill = median_colour(rgb) if fill is None else fill
                out.append(straight_crop(rgb, geom, fill))
                continue
            c = rgb[y0: y1 + 1, x0: x1 + 1]
            if is_vertical(det):  # vertical line: read it rotated, as RapidOCR
                c = np.ascontiguousarray(np.rot90(c))
            out.append(np.ascontiguousarray(c))
        return out

    def text(self, rgb: np.ndarray) -> str:
        """All text in the image, one line per detected box."""
        return lines_text(self(rgb))

