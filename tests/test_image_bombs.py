"""Decode bombs (s37 audit 6): small files whose decoding costs seconds or gigabytes are
refused from their headers, before their pixels are decoded."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vlmguard.errors import ImageDecodeError, ImageSizeError, ImageTooLargeError
from vlmguard.image import MAX_RLE_PIXELS, MAX_SIDE, load_views


def _bmp_rle(width: int, height: int, body: bytes, bits: int = 8) -> bytes:
    """An RLE8 (bits 8) or RLE4 (bits 4) BMP with a black-and-white palette."""
    palette = b"\x00\x00\x00\x00\xff\xff\xff\x00"
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 1 if bits == 8 else 2,
                      len(body), 2835, 2835, 2, 0)
    offset = 14 + len(dib) + len(palette)
    return (b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + dib + palette
            + body)


def _eol_rows(height: int) -> bytes:
    """One white pixel then end-of-line per row: Pillow pads each row a byte at a time."""
    return b"\x01\x01\x00\x00" * height + b"\x00\x01"


def test_an_rle_bmp_decodes_up_to_its_pixel_cap() -> None:
    # bottom-up rows: the first row in the file is the last one of the image
    views = load_views(_bmp_rle(4, 2, b"\x02\x01\x02\x00\x00\x00\x04\x00\x00\x01"))
    assert views is not None and views[0][:, :, 0].tolist() == [[0] * 4, [255, 255, 0, 0]]
    side = int(MAX_RLE_PIXELS ** 0.5)
    assert load_views(_bmp_rle(side, side, _eol_rows(side)))[0].shape == (side, side, 3)


@pytest.mark.parametrize("bits", [8, 4])
def test_an_rle_bmp_over_its_pixel_cap_is_refused_before_it_is_decoded(bits: int) -> None:
    """s37 audit: Pillow's Python RLE decoder took 8 s and 1.1 GB on a 68-byte BMP."""
    width = MAX_RLE_PIXELS // 1000 + 1
    data = _bmp_rle(width, 1000, _eol_rows(1000), bits)
    with pytest.raises(ImageTooLargeError, match="MAX_RLE_PIXELS"):
        load_views(data)
    with pytest.raises(ImageTooLargeError, match="MAX_RLE_PIXELS"):  # opened by the caller
        load_views(Image.open(io.BytesIO(data)))
    # an uncompressed BMP of that size is decoded in C, and not capped
    plain = io.BytesIO()
    Image.new("L", (width, 1000), 255).save(plain, "BMP")
    assert np.asarray(load_views(plain.getvalue())[0]).shape == (1000, width, 3)


def _tiff_page_chain(pages: int) -> bytes:
    """A valid 8x8 TIFF page followed by ``pages`` tiny pages of 54 bytes each."""
    buf = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buf, "TIFF")
    out = bytearray(buf.getvalue())
    first = struct.unpack_from("<I", out, 4)[0]
    struct.pack_into("<I", out, first + 2 + 12 * struct.unpack_from("<H", out, first)[0],
                     len(out))
    for k in range(pages):
        out += struct.pack("<H", 4) + b"".join(
            struct.pack("<HHII", tag, 4, 1, 8) for tag in (256, 257, 273, 279))
        out += struct.pack("<I", len(out) + 4 if k < pages - 1 else 0)
    return bytes(out)


def _gif_frames(frames: int) -> bytes:
    ims = [Image.new("L", (4, 4), k % 256) for k in range(frames)]
    buf = io.BytesIO()
    ims[0].save(buf, "GIF", save_all=True, append_images=ims[1:], duration=10)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["TIFF", "GIF"])
def test_frames_are_not_counted_by_walking_the_whole_file(fmt: str) -> None:
    """s37 audit: n_frames walked every TIFF page (quadratic in Python: 4.2 MB took 50 s)
    before MAX_FRAMES refused the image; seeking stops one frame past the cap."""
    from unittest import mock

    from PIL import GifImagePlugin, TiffImagePlugin

    from vlmguard.errors import AnimatedImageError
    from vlmguard.image import MAX_FRAMES

    cls = TiffImagePlugin.TiffImageFile if fmt == "TIFF" else GifImagePlugin.GifImageFile
    data = _tiff_page_chain(2000) if fmt == "TIFF" else _gif_frames(300)
    real_seek = cls._seek
    seeks: list[int] = []

    def seek(im: Image.Image, frame: int, *args: object) -> None:
        seeks.append(frame)
        real_seek(im, frame, *args)

    with mock.patch.object(cls, "_seek", seek):
        with pytest.raises(AnimatedImageError, match="frames"):
            load_views(data)
    assert max(seeks) <= MAX_FRAMES and len(seeks) < 4 * MAX_FRAMES
    opened = Image.open(io.BytesIO(data))
    opened.seek(MAX_FRAMES)  # a caller's image already past the cap
    with pytest.raises(AnimatedImageError):
        load_views(opened)
    views = load_views(_gif_frames(MAX_FRAMES))  # at the cap: every frame read
    assert views is not None and len(views) == MAX_FRAMES


def _png(extra: bytes, after: bytes = b"") -> bytes:
    """An 8x8 white PNG with ``extra`` chunks before its image data and ``after`` it."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buf, "PNG")
    data = buf.getvalue()
    iend = data.rindex(b"IEND") - 4
    return data[:33] + extra + data[33:iend] + after + data[iend:]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_png_with_a_second_icc_profile_is_refused_before_it_is_opened() -> None:
    """s37 audit: Pillow inflated every iCCP chunk (1 MiB from ~1 KiB each, no total)."""
    from unittest import mock

    icc = _chunk(b"iCCP", b"x\x00\x00" + zlib.compress(b"\x00" * (1 << 20), 9))
    assert load_views(_png(icc))[0].shape == (8, 8, 3)  # one, as the PNG spec allows
    with mock.patch("zlib.decompressobj", side_effect=AssertionError("inflated")):
        for data in (_png(icc * 2), _png(icc, after=icc)):
            with pytest.raises(ImageDecodeError, match="ICC profile"):
                load_views(data)


def test_png_chunks_are_capped_in_number_and_bytes() -> None:
    """s37 audit: each chunk costs Pillow a Python call: 800,000 empty ones took 2.8 s."""
    from vlmguard.image import (
        MAX_PNG_CHUNKS,
        MAX_PNG_METADATA_BYTES,
        MAX_PNG_METADATA_CHUNKS,
    )

    note = _chunk(b"teXt", b"")
    assert load_views(_png(note * (MAX_PNG_METADATA_CHUNKS - 8)))[0].shape == (8, 8, 3)
    data = _png(note * MAX_PNG_METADATA_CHUNKS)
    with pytest.raises(ImageDecodeError, match="MAX_PNG_METADATA_CHUNKS"):
        load_views(data)
    with pytest.raises(ImageDecodeError, match="MAX_PNG_METADATA_CHUNKS"):  # caller-opened
        load_views(Image.open(io.BytesIO(data)))
    big = _chunk(b"teXt", b"\x00" * (MAX_PNG_METADATA_BYTES // 4))
    with pytest.raises(ImageDecodeError, match="MAX_PNG_METADATA_BYTES"):
        load_views(_png(big * 3, after=big * 2))  # also those after the image data
    with pytest.raises(ImageDecodeError, match="MAX_PNG_CHUNKS"):  # empty image data chunks
        load_views(_png(_chunk(b"IDAT", b"") * MAX_PNG_CHUNKS))


def _png_header(width: int, height: int) -> bytes:
    """A PNG that states width x height and holds almost no data: refused from its header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _chunk(b"IEND", b""))


@pytest.mark.parametrize("shape", [(40_000_000, 1), (1, 40_000_000), (MAX_SIDE + 1, 600)])
def test_a_side_over_max_side_is_refused_from_the_header(shape: tuple[int, int]) -> None:
    """s37 audit: 40,000,000x1 is within max_pixels, and cost 1.0-1.1 GB (a square 0.3 GB)."""
    with pytest.raises(ImageSizeError, match="MAX_SIDE"):
        load_views(_png_header(*shape))


def test_an_array_with_a_side_over_max_side_is_refused() -> None:
    for shape in ((1, MAX_SIDE + 1), (MAX_SIDE + 1, 1)):
        with pytest.raises(ImageSizeError, match="MAX_SIDE"):
            load_views(np.zeros(shape, np.uint8))


def test_the_longest_side_allowed_decodes() -> None:
    buf = io.BytesIO()
    Image.new("L", (1, MAX_SIDE), 255).save(buf, "PNG")
    assert load_views(buf.getvalue())[0].shape == (MAX_SIDE, 1, 3)
    assert load_views(np.zeros((2, MAX_SIDE), np.uint8))[0].shape == (2, MAX_SIDE, 3)
