"""Decode and validate the user's image into one canonical form: HxWx3 uint8 RGB, C-contiguous.

Every later stage (tagger, OCR, preprocessing) can then assume that form. Images come from
untrusted callers, so this module refuses over-large images *before* decoding the pixels
(decompression bombs), forces a full decode so corrupt or truncated files fail here with a
typed error instead of deep inside a model, honours the EXIF orientation (phone photos), and
converts every Pillow mode to RGB faithfully (alpha over white, 16-bit by its real range).

Some images have two faces: the guard's faithful conversion, and what Pillow's plain
``convert("RGB")`` (the usual first step of a VLM's preprocessing) hands a model, which drops
alpha and clips 16-bit values at 255. White text on a transparent background is invisible
over white and plain with alpha dropped; dark-grey text in a 16-bit image with one white
pixel vanishes when stretched to its range and shows when clipped. :func:`load_views`
returns both faces where they differ, and the guard reads text in each.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import warnings
from contextlib import nullcontext
from typing import IO, TypeAlias, cast

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import (
    AnimatedImageError,
    ImageDecodeError,
    ImageSizeError,
    ImageTooLargeError,
    InvalidInputError,
    UnsupportedInputTypeError,
)

__all__ = ["DEFAULT_MAX_PIXELS", "ImageInput", "load_image", "load_views"]

ImageInput: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray | None
)
"""What :func:`load_image` accepts: a path, encoded bytes, a Pillow image or a NumPy array."""

DEFAULT_MAX_PIXELS = 40_000_000
"""40 MP: above any phone camera, far below what would exhaust an edge device's memory."""

MAX_SIDE = 65_535
"""Pixels on an image's longer side. A 40,000,000x1 or 1x40,000,000 image is within
``max_pixels`` but took 1.0-1.1 GB more through the guard (Pillow keeps each row apart),
against 0.3 GB for a square 40 MP one (s37 audit). JPEG and GIF store a side in 16 bits and
WebP in 14, so no photo is longer; long screenshots (1,080x20,000) and phone panoramas
(~12,000x3,000) are well within. At 40 MP the longest allowed, 65,535x610 either way, took
less than the square (measured)."""
_ACCEPTED = (
    "a file path (str or os.PathLike), encoded image bytes (bytes, bytearray, memoryview), "
    "a PIL.Image.Image, or a NumPy uint8 array shaped HxW, HxWx3 (RGB) or HxWx4 (RGBA)"
)
MAX_FRAMES = 8
"""Frames of an animated or multi-page image (GIF, WebP, APNG, TIFF, MPO) the guard reads.
Each frame's text is read (a harmful line on a second frame passed unread when only the
first was, stop 34), so their number is bounded; an image with more is refused, not read
in part. Each frame's own size, and all of them together, count against ``max_pixels``,
checked before the frame is decoded; each frame is read in every face a still image is."""
FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""The encoded formats the guard decodes: those a user sends (MPO is a phone camera's JPEG).
Containers such as ICO/ICNS/CUR decode an embedded image inside ``Image.open``, before any
size check could run (a 280 KB ICO can expand to hundreds of MB), so they are refused."""

def _register_formats() -> tuple[str, ...]:
    """Import the accepted formats' plugins (``Image.open(formats=...)`` needs them loaded)."""
    import importlib

    for mod in ("JpegImagePlugin", "MpoImagePlugin", "PngImagePlugin", "WebPImagePlugin",
                "GifImagePlugin", "BmpImagePlugin", "TiffImagePlugin"):
        try:
            importlib.import_module(f"PIL.{mod}")
        except ImportError:  # e.g. a Pillow built without WebP: that format is then refused
            pass
    return tuple(f for f in FORMATS if f in Image.OPEN)


_OPEN_FORMATS = _register_formats()
MAX_SCANS = 64
"""Scans (SOS segments) of one JPEG or MPO frame the guard decodes. libjpeg walks every block
of the image once per scan, so a 10-byte empty scan costs ~3 ms on a 36 MP image: 8,000 of
them (78 KiB) decoded for 20 s (s37 audit). Real progressive files have ~10 (libjpeg's
default script: 10 for colour, 6 for grey), baseline ones 1; 64 leaves room for custom
scripts and bounds a frame at ~0.2 s of scans. Counted before the frame is decoded."""
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""FF then a marker code: never inside valid entropy-coded data, where FF is followed by 00
(a stuffed byte) or a restart marker RST0-7 (skipped here too, as they carry no length)."""
_NO_LENGTH = frozenset({0x01, 0xD8})  # TEM, SOI: markers without a length (RSTn are skipped)
_MAX_SEGMENTS = 65_536
"""Markers walked while counting scans (real files have a few dozen): 10 MiB of empty
4-byte segments would otherwise take the walk ~2.5 s."""
MAX_RLE_PIXELS = 1_000_000
"""Pixels of an RLE8 or RLE4 BMP the guard decodes. Pillow decodes these in Python, a loop
step per pixel, run or padding byte: a 68-byte 40,000,000x1 RLE8 BMP took 8 s and 1.1 GB
(s37 audit), and at 2 MP one-pixel runs took 1.2-1.6 s. RLE BMPs are 4- and 8-bit palette
images from old Windows tools (boot screens, installer art, clip art: 640x480 and smaller),
and no VLM API takes BMP at all; 1 MP (1,280x780) keeps those and bounds a file at ~0.7 s.
Checked from the header before decoding; uncompressed BMPs decode in C and are not capped."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IMAGE_DATA = frozenset({b"IDAT", b"fdAT"})  # the pixels of the image, of an APNG frame
MAX_PNG_CHUNKS = 65_536
"""Chunks of a PNG or APNG, image data included, walked before it is opened (8 bytes read a
chunk). libpng writes 8 KiB data chunks, so this is 512 MiB of image data, past any 40 MP
PNG; 800,000 empty chunks (9.4 MB) cost Pillow 2.8 s (s37 audit)."""
MAX_PNG_METADATA_CHUNKS = 4_096
"""Chunks other than image data (IHDR, PLTE, tEXt, eXIf, an APNG frame's fcTL...): real
files have a dozen or two, one more per APNG frame; Pillow makes a Python call for each."""
MAX_PNG_METADATA_BYTES = 16 << 20
"""Bytes of those chunks together: an ICC profile, EXIF, XMP and a C2PA manifest take at
most a few MiB. Pillow reads each, and inflates an iCCP or zTXt one. Over one iCCP chunk
(the ICC profile; the PNG spec allows one) is refused too: Pillow inflated every one, up to
1 MiB each from ~1 KiB, with no total, so 10 MB of them took 10 s and passed (s37 audit)."""
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
VIEW_DIFF_LEVEL = 48
"""A pixel differs between an image's two faces when a channel moves by more than this (of
255)."""
VIEW_DIFF_SHARE = 0.001
"""...and the plain face is read too when more than this share of pixels differ (a line of
small text on a 1000x1000 image is ~0.5 %)."""
_HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N"})


def load_image(image: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray | None:
    """Return ``image`` as a C-contiguous HxWx3 uint8 RGB array, or None when it is None.

    A transparent image comes back composited over white, a 16-bit one stretched to its
    range; :func:`load_views` also gives Pillow's plain conversion of such an image. Checks
    and errors as :func:`load_views`.
    """
    views = load_views(image, max_pixels=max_pixels)
    return None if views is None else views[0]


def load_views(image: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS
               ) -> tuple[np.ndarray, ...] | None:
    """The image's faces as C-contiguous HxWx3 uint8 RGB arrays, or None when it is None.

    The first is the faithful conversion (alpha over white, 16 bits by their real range);
    a second, Pillow's plain ``convert("RGB")`` (alpha dropped, 16 bits clipped), follows
    only for a transparent or high-depth image where the two visibly differ.

    ``max_pixels`` caps width*height (checked from the header, before decoding). Pillow's own
    bomb guard (``Image.MAX_IMAGE_PIXELS``) still applies on top of it. A PIL image opened
    from a file is held to ``FORMATS`` as bytes are; one made in memory (``format`` None:
    ``Image.new``, ``convert``, ``copy``) has no file decoder behind it and is accepted.

    Raises ``UnsupportedInputTypeError`` (wrong Python type or dtype), ``InvalidInputError``
    (missing file, bad array shape), ``ImageDecodeError`` (corrupt, truncated, not an image),
    ``ImageTooLargeError`` (over ``max_pixels``) and ``ImageSizeError`` (zero width or
    height, a side over ``MAX_SIDE``).
    """
    if image is None:
        return None
    if isinstance(image, np.matrix):  # 2-D only, and its indexing breaks HxWxC code
        raise UnsupportedInputTypeError(
            f"np.matrix is not an image; pass np.asarray(m) instead. Accepted: {_ACCEPTED}")
    if isinstance(image, np.ndarray):
        return _from_array(np.asarray(image), max_pixels)
    if isinstance(image, Image.Image):
        if image.format is not None and image.format not in FORMATS:
            # an opened file whose decoder is not one the guard runs (EPS runs Ghostscript)
            raise ImageDecodeError(
                f"a PIL image of format {image.format!r}: the guard reads only "
                f"{', '.join(FORMATS)} files; convert it in memory first "
                "(image.convert('RGB')), or pass the file's bytes")
        _check_size(image.size, max_pixels)
        try:
            if image.format == "PNG" and isinstance(image, ImageFile.ImageFile) and image.fp:
                _check_png(image.fp)  # the chunks its load or seek would read
            _check_frame(image, max_pixels)
            image.load()
            views = _to_views(_exif_transpose(image))
            return views + _other_frames(image, max_pixels, views)
        except InvalidInputError:
            raise
        except Exception as exc:  # a lazily opened image may still fail to decode
            raise ImageDecodeError(f"the PIL image could not be decoded: {exc}") from exc
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise ImageDecodeError(f"the image bytes are empty; expected {_ACCEPTED}")
        return _decode(io.BytesIO(data), "the image bytes", max_pixels)
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if isinstance(path, bytes):  # os.PathLike[bytes]
            path = os.fsdecode(path)
        if not os.path.isfile(path):
            what = ("is a directory, not a file" if os.path.isdir(path) else
                    "is not a regular file" if os.path.exists(path) else "does not exist")
            raise InvalidInputError(f"image path {path!r} {what}; expected {_ACCEPTED}")
        return _decode(path, f"image file {path!r}", max_pixels)
    raise UnsupportedInputTypeError(
        f"unsupported image type {type(image).__name__}; expected {_ACCEPTED}, or None"
    )


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse an empty image, a side over ``MAX_SIDE`` or pixels over ``max_pixels``."""
    width, height = size
    if width < 1 or height < 1:
        raise ImageSizeError(f"the image is {width}x{height} pixels; it needs at least 1x1")
    if max(width, height) > MAX_SIDE:
        raise ImageSizeError(
            f"the image is {width}x{height} pixels, a side over the limit of {MAX_SIDE:,} "
            "(MAX_SIDE); crop or downscale it first")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (max_pixels); downscale it first or raise max_pixels"
        )


DRAFT_SIDE = 1600
"""A JPEG whose long side is at least twice this is decoded at a half, a quarter or an
eighth of its size (libjpeg's DCT scaling, :meth:`PIL.Image.Image.draft`), never below this
on its long side: a VLM reads a photo at a long side of at most ~1,568 (Claude) to 2,048
(GPT-4o) pixels, so the guard still sees what it sees, at a quarter of the decode time and
memory of a 12-megapixel photo. 0: always decode in full."""


def _draft(im: Image.Image) -> None:
    """Ask libjpeg for the smallest DCT scale that keeps ``DRAFT_SIDE`` (see there)."""
    if DRAFT_SIDE and im.format in ("JPEG", "MPO") and max(im.size) >= 2 * DRAFT_SIDE:
        scale = max(im.size) / DRAFT_SIDE
        im.draft(im.mode, (math.ceil(im.size[0] / scale), math.ceil(im.size[1] / scale)))


def _check_png(fp: IO[bytes]) -> None:
    """Refuse a PNG or APNG over ``MAX_PNG_CHUNKS``, ``MAX_PNG_METADATA_CHUNKS`` or
    ``MAX_PNG_METADATA_BYTES``, or with two ICC profiles, walking its chunk headers up to
    IEND (linear: each step moves forward by a chunk's stated length); not a PNG, or one
    cut short, is left to the decoder. ``fp`` is left where it was."""
    where = fp.tell()
    try:
        fp.seek(0)
        if fp.read(8) != _PNG_SIGNATURE:
            return
        pos, chunks, metadata, metadata_bytes, icc = 8, 0, 0, 0, 0
        while True:
            fp.seek(pos)
            head = fp.read(8)
            if len(head) < 8:
                return
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            chunks += 1
            if kind not in _PNG_IMAGE_DATA:
                metadata += 1
                metadata_bytes += length
            icc += kind == b"iCCP"
            over = (
                chunks > MAX_PNG_CHUNKS and f"over {MAX_PNG_CHUNKS:,} chunks (MAX_PNG_CHUNKS)"
                or metadata > MAX_PNG_METADATA_CHUNKS and f"over {MAX_PNG_METADATA_CHUNKS:,} "
                "chunks besides image data (MAX_PNG_METADATA_CHUNKS)"
                or metadata_bytes > MAX_PNG_METADATA_BYTES and f"over {MAX_PNG_METADATA_BYTES:,}"
                " bytes of chunks besides image data (MAX_PNG_METADATA_BYTES)"
                or icc > 1 and "more than one ICC profile (iCCP chunk; the "
                "PNG spec allows one)")
            if over:
                raise ImageDecodeError(f"the PNG has {over}: re-save it without the extra "
                                       "metadata")
            if kind == b"IEND":
                return
            pos += 12 + length  # length, type, data, CRC
    finally:
        fp.seek(where)


def _check_frame(im: Image.Image, max_pixels: int) -> None:
    """Every check on an opened frame that needs only its header, run before its pixels are
    decoded."""
    _check_size(im.size, max_pixels)
    _check_rle(im)
    _check_scans(im)


def _check_rle(im: Image.Image) -> None:
    """Refuse an RLE8 or RLE4 BMP of over ``MAX_RLE_PIXELS`` (Pillow's Python decoder)."""
    if (isinstance(im, ImageFile.ImageFile) and im.tile and im.tile[0].codec_name == "bmp_rle"
            and im.size[0] * im.size[1] > MAX_RLE_PIXELS):
        raise ImageTooLargeError(
            f"the image is an RLE-compressed BMP of {im.size[0]}x{im.size[1]} pixels, over "
            f"the limit of {MAX_RLE_PIXELS:,} for RLE BMPs (MAX_RLE_PIXELS: they are decoded "
            "in Python, slowly); re-save it as PNG or as an uncompressed BMP")


def _check_scans(im: Image.Image) -> None:
    """Refuse a JPEG or MPO frame with more than ``MAX_SCANS`` scans, before it is decoded;
    any other image, or one already decoded (no tile left), is not walked."""
    if not isinstance(im, ImageFile.ImageFile) or im.format not in ("JPEG", "MPO"):
        return
    fp = im.fp
    if not im.tile or fp is None:
        return
    where = fp.tell()
    try:
        scans = _count_scans(fp, im.tile[0].offset, MAX_SCANS)
    finally:
        fp.seek(where)
    if scans > MAX_SCANS:
        raise ImageDecodeError(
            f"the JPEG has over {MAX_SCANS} scans (MAX_SCANS); real ones have about 10, and "
            "each costs a pass over every pixel: re-save it as a baseline or standard "
            "progressive JPEG")


def _count_scans(fp: IO[bytes], start: int, limit: int) -> int:
    """The SOS markers of the JPEG at ``start``, up to its EOI, or ``limit + 1`` once over it;
    ``ImageDecodeError`` past ``_MAX_SEGMENTS`` markers.

    Walks the segments as libjpeg does: a length-delimited segment is skipped whole (an SOS
    inside an EXIF thumbnail is not this frame's), and elsewhere (entropy-coded data, or
    garbage libjpeg skips with a warning) the next FF + marker code is the next marker. Data
    after EOI (a phone's appended video) is not read. Reads through a 1 MiB window, since a
    path's file may be large; every step moves forward."""
    window, base = b"", start

    def at(pos: int) -> int:  # pos's index in a window that holds 2 bytes from it unless at EOF
        nonlocal window, base
        if not base <= pos <= base + len(window) - 2:
            fp.seek(pos)
            window, base = fp.read(1 << 20), pos
        return pos - base

    i = at(start)
    if window[i:i + 2] != b"\xff\xd8":  # not at an SOI: the decoder reports what it is
        return 0
    pos, scans = start + 2, 0
    for _ in range(_MAX_SEGMENTS):
        if scans > limit:
            return scans
        i = at(pos)
        found = _JPEG_MARKER.search(window, i)
        if found is None:
            if len(window) - i < 2:  # end of file, no EOI: libjpeg stops here too
                return scans
            pos = base + len(window) - 1  # the last byte may be an FF whose code comes next
            continue
        code, pos = window[found.start() + 1], base + found.end()
        if code == 0xD9:  # EOI
            return scans
        if code in _NO_LENGTH:
            continue
        i = at(pos)
        if len(window) - i < 2:
            return scans
        scans += code == 0xDA
        pos += int.from_bytes(window[i:i + 2], "big")  # the length counts its own 2 bytes
    raise ImageDecodeError(f"the JPEG has over {_MAX_SEGMENTS:,} segments; real ones have a "
                           "few dozen")


def _decode(source: str | io.BytesIO, what: str, max_pixels: int) -> tuple[np.ndarray, ...]:
    """Open (header only), check the size, then force a full decode inside one try. A path
    is opened once, here, so the file walked is the file decoded."""
    try:
        with (warnings.catch_warnings(),
              open(source, "rb") if isinstance(source, str) else nullcontext(source) as fp):
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: both are bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            _check_png(fp)  # before Image.open, which reads a PNG's chunks up to its pixels
            with Image.open(fp, formats=_OPEN_FORMATS) as im:
                _check_frame(im, max_pixels)
                _draft(im)
                im.load()  # full decode: truncated/corrupt data fails here, not later
                views = _to_views(_exif_transpose(im))
                return views + _other_frames(im, max_pixels, views)
    except (ImageTooLargeError, ImageSizeError, AnimatedImageError, ImageDecodeError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"{what}: too large to decode safely (decompression bomb guard): {exc}"
        ) from exc
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{what}: does not exist; expected {_ACCEPTED}") from exc
    except PermissionError as exc:
        raise InvalidInputError(f"{what}: cannot be read: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"{what}: not an accepted image format (JPEG, PNG, WebP, GIF, BMP or TIFF)"
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError…
        raise ImageDecodeError(f"{what}: corrupt or truncated: {exc}") from exc


def _other_frames(im: Image.Image, max_pixels: int, shown: tuple[np.ndarray, ...]
                  ) -> tuple[np.ndarray, ...]:
    """Every frame of ``im`` but the current one, in every face :func:`_to_views` gives it
    (a face that repeats one already ``shown`` or kept is dropped), for the guard to read
    their text too; () for a still image. The image is left on the frame it was on.

    Each frame's size is checked after its header is read and before it is decoded, and
    all frames together against ``max_pixels``: a multi-page TIFF's pages each have their
    own size, so an 8x8 first page said nothing of 36 MP pages behind it (s36 audit). A
    later frame gets the alpha-dropped face too: hidden ink in frame 2 of an APNG went
    unread when it had only the faithful one (s36 audit).

    Frames are found by seeking one further at a time, never by ``n_frames``: for a TIFF or
    GIF Pillow counts those by walking the whole file, a TIFF's page chain in quadratic
    Python (80,000 tiny pages, 4.2 MB: 50 s before the refusal, s37 audit). Frame
    ``MAX_FRAMES`` existing is enough to refuse; what is read before it stays within
    ``max_pixels``. A count the header gives for free (PNG, WebP, MPO) refuses at once."""
    header_count = vars(im).get("n_frames")  # set when opened, not a property that walks
    current = im.tell()
    if (isinstance(header_count, int) and header_count > MAX_FRAMES) or current >= MAX_FRAMES:
        raise _too_many_frames()
    total = im.size[0] * im.size[1]
    seen = {_digest(face) for face in shown}
    out: list[np.ndarray] = []
    # an MPO's later frames keep the first one's DCT scale (decoderconfig) through a seek
    # that restores their full size, and then read as truncated: each is drafted on its own
    drafted = bool(getattr(im, "decoderconfig", ()))
    try:
        for k in range(MAX_FRAMES + 1):
            if k == current:
                continue
            try:
                im.seek(k)  # reads the frame's header (a TIFF page's own size), not its pixels
            except EOFError:
                break
            if k == MAX_FRAMES:
                raise _too_many_frames()
            _check_frame(im, max_pixels)
            if drafted and isinstance(im, ImageFile.ImageFile):
                im.decoderconfig = ()
                _draft(im)
            total += im.size[0] * im.size[1]
            if total > max_pixels:
                raise ImageTooLargeError(
                    f"the image's frames make over {total:,} pixels together (frame {k + 1} "
                    f"is {im.size[0]}x{im.size[1]}), over the limit of {max_pixels:,} "
                    "(max_pixels)")
            im.load()
            for face in _to_views(_exif_transpose(im)):
                digest = _digest(face)
                if digest not in seen:
                    seen.add(digest)
                    out.append(face)
    finally:
        im.seek(current)
    return tuple(out)


def _too_many_frames() -> AnimatedImageError:
    return AnimatedImageError(
        f"the image has over {MAX_FRAMES} frames (animated or multi-page); the guard reads "
        f"at most {MAX_FRAMES} and does not pass frames it has not read: send a still image")


def _digest(rgb: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=16).digest()


def _exif_transpose(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phone photos); a broken EXIF block is ignored, not fatal."""
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:
        return im
    return out if out is not None else im


def _to_views(im: Image.Image) -> tuple[np.ndarray, ...]:
    """The faithful conversion, and Pillow's plain one where they differ visibly (see the
    module docstring)."""
    rgb = _to_rgb_array(im)
    if not (im.mode in _ALPHA_MODES or im.mode in _HIGH_DEPTH_MODES or im.mode == "La"
            or (im.mode == "P" and "transparency" in im.info)):
        return (rgb,)
    try:
        plain = np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except (ValueError, OSError):
        return (rgb,)
    return _with_plain(rgb, plain)


def _with_plain(rgb: np.ndarray, plain: np.ndarray) -> tuple[np.ndarray, ...]:
    """Both faces if enough of the image differs, else the faithful one alone.

    Every pixel is compared, a strip of rows at a time (a 40 MP image makes no full-size
    temporaries), and counted on a ~1 MP grid of blocks: a block differs when any pixel in
    it does. A strided sample instead let text placed off its grid points hide the whole
    plain face (stop 35 audit)."""
    h, w = rgb.shape[:2]
    step = max(1, math.ceil(math.sqrt(h * w / 1e6)))
    bw = -(-w // step)
    differs = np.zeros((-(-h // step), bw), dtype=bool)
    rows = step * max(1, 256 // step)
    for y in range(0, h, rows):
        a, b = rgb[y:y + rows], plain[y:y + rows]
        d = (np.maximum(a, b) - np.minimum(a, b)).max(axis=2) > VIEW_DIFF_LEVEL  # uint8
        pad = np.zeros((-(-d.shape[0] // step) * step, bw * step), dtype=bool)
        pad[:d.shape[0], :w] = d
        differs[y // step: y // step + pad.shape[0] // step] |= pad.reshape(
            pad.shape[0] // step, step, bw, step).any(axis=(1, 3))
    return (rgb, plain) if float(differs.mean()) > VIEW_DIFF_SHARE else (rgb,)


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an HxWx3 uint8 RGB array."""
    mode = im.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    if mode == "La":  # premultiplied grey + alpha: over white is simply L + (255 - A)
        la = np.asarray(im, dtype=np.uint8).astype(np.int16)
        return _grey_to_rgb(np.clip(la[:, :, 0] + 255 - la[:, :, 1], 0, 255).astype(np.uint8))
    if mode == "LAB":  # Pillow's plain convert() would reinterpret L*a*b* as RGB
        return np.ascontiguousarray(np.asarray(_lab_to_rgb(im), dtype=np.uint8))
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in im.info):
        return _composite_over_white(np.asarray(im.convert("RGBA"), dtype=np.uint8))
    if mode in _HIGH_DEPTH_MODES:
        return _grey_to_rgb(_stretch_to_uint8(np.asarray(im)))
    if mode in ("L", "1"):
        return _grey_to_rgb(np.asarray(im.convert("L"), dtype=np.uint8))
    try:  # P, CMYK, YCbCr, HSV…: Pillow knows the conversion
        rgb = im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(
            f"image mode {mode!r} cannot be converted to RGB; save the image as RGB"
        ) from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _lab_to_rgb(im: Image.Image) -> Image.Image:
    from PIL import ImageCms

    try:
        transform = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        # Not in place, so Pillow returns a new image (its stub also allows None for inPlace).
        return cast(Image.Image, ImageCms.applyTransform(im, transform))
    except Exception as exc:  # ImageCms (littlecms) may be missing from a Pillow build
        raise ImageDecodeError(
            "image mode 'LAB' cannot be converted to RGB here; save the image as RGB"
        ) from exc


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map 16/32-bit or float pixels to 0..255 by their actual [min, max].

    Pillow's own ``convert("L")`` clips at 255, which turns most 16-bit images white.
    """
    arr = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if arr.ndim == 3:  # e.g. a multi-channel float array; keep the first channel
        arr = arr[..., 0]
    lo, hi = float(arr.min()), float(arr.max())
    if hi > lo:
        arr = (arr - lo) * (255.0 / (hi - lo))
    else:  # a constant image carries no contrast; keep its value where it fits
        arr = np.full_like(arr, min(max(lo, 0.0), 255.0))
    return np.rint(arr).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _composite_over_white(rgba: np.ndarray) -> np.ndarray:
    """Alpha-composite over white: transparent areas of logos/stickers must not go black."""
    alpha = rgba[:, :, 3:4].astype(np.uint32)
    rgb = rgba[:, :, :3].astype(np.uint32)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return np.ascontiguousarray(out.astype(np.uint8))


def _from_array(arr: np.ndarray, max_pixels: int) -> tuple[np.ndarray, ...]:
    if arr.dtype != np.uint8:
        raise UnsupportedInputTypeError(
            f"NumPy image arrays must have dtype uint8, got {arr.dtype}; convert with "
            f"e.g. np.clip(a, 0, 255).astype(np.uint8); accepted: {_ACCEPTED}"
        )
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4)):
        _check_size((arr.shape[1], arr.shape[0]), max_pixels)
    else:
        raise InvalidInputError(
            f"NumPy image arrays must be HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA), "
            f"got shape {arr.shape}"
        )
    if arr.ndim == 2:
        return (_grey_to_rgb(arr),)
    if arr.shape[2] == 1:
        return (_grey_to_rgb(arr[:, :, 0]),)
    if arr.shape[2] == 4:
        return _with_plain(_composite_over_white(arr), np.ascontiguousarray(arr[:, :, :3]))
    return (np.ascontiguousarray(arr),)
