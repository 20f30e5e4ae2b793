"""load_image: every accepted input type and Pillow mode, and every way an image can be bad."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmguard.errors import (
    ImageDecodeError,
    ImageSizeError,
    ImageTooLargeError,
    InvalidInputError,
    UnsupportedInputTypeError,
)
from vlmguard.image import _with_plain, load_image, load_views


def _rgb(h: int = 12, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _check(out: np.ndarray | None, h: int, w: int) -> np.ndarray:
    assert isinstance(out, np.ndarray)
    assert out.shape == (h, w, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    return out


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is tiny (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + _png_chunk(b"IEND", b"")
    )


# ---- input types -------------------------------------------------------------------------


def test_none_is_none() -> None:
    assert load_image(None) is None


def test_numpy_rgb_is_returned_unchanged() -> None:
    arr = _rgb()
    assert np.array_equal(_check(load_image(arr), 12, 20), arr)


def test_numpy_non_contiguous_becomes_contiguous() -> None:
    arr = _rgb(20, 30)[::2, ::3]
    out = _check(load_image(arr), 10, 10)
    assert np.array_equal(out, arr)


def test_numpy_grey_and_single_channel() -> None:
    grey = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    for arr in (grey, grey[:, :, None]):
        out = _check(load_image(arr), 12, 20)
        assert np.array_equal(out[:, :, 0], grey) and np.array_equal(out[:, :, 2], grey)


def test_numpy_rgba_composites_over_white() -> None:
    arr = np.zeros((4, 4, 4), dtype=np.uint8)  # black, fully transparent
    arr[0, 0] = (10, 20, 30, 255)  # opaque pixel stays as is
    arr[0, 1] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    out = _check(load_image(arr), 4, 4)
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[1, 1]) == (255, 255, 255)
    assert all(126 <= v <= 128 for v in out[0, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int64, bool])
def test_numpy_wrong_dtype(dtype: type) -> None:
    with pytest.raises(UnsupportedInputTypeError, match="uint8"):
        load_image(np.zeros((4, 4, 3), dtype=dtype))


@pytest.mark.parametrize("shape", [(4,), (4, 4, 2), (4, 4, 5), (2, 4, 4, 3)])
def test_numpy_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInputError, match="HxWx3"):
        load_image(np.zeros(shape, dtype=np.uint8))


def test_path_str_and_pathlike(tmp_path: Path) -> None:
    arr = _rgb()
    path = tmp_path / "img.png"
    Image.fromarray(arr).save(path)
    assert np.array_equal(_check(load_image(str(path)), 12, 20), arr)
    assert np.array_equal(_check(load_image(path), 12, 20), arr)


def test_bytes_bytearray_memoryview() -> None:
    arr = _rgb()
    data = _encode(Image.fromarray(arr), "PNG")
    for blob in (data, bytearray(data), memoryview(data)):
        assert np.array_equal(_check(load_image(blob), 12, 20), arr)


def test_pil_image() -> None:
    arr = _rgb()
    assert np.array_equal(_check(load_image(Image.fromarray(arr)), 12, 20), arr)


@pytest.mark.parametrize("fmt", ["PCX", "SGI", "PPM", "TGA", "EPS"])
def test_pil_image_of_a_format_outside_the_allowlist_is_refused_unloaded(fmt: str) -> None:
    """s37 audit: these were refused as bytes but decoded when opened by the caller (an EPS
    runs Ghostscript when loaded)."""
    data = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n" if fmt == "EPS"
            else _encode(Image.fromarray(_rgb()), fmt))
    with pytest.raises(ImageDecodeError):
        load_image(data)
    lazy = Image.open(io.BytesIO(data))
    with pytest.raises(ImageDecodeError, match=f"format '{fmt}'"):
        load_image(lazy)
    assert lazy.tile  # never loaded
    if fmt != "EPS":  # made in memory (format None): no file decoder left to run
        _check(load_image(Image.open(io.BytesIO(data)).convert("RGB")), 12, 20)
    still = Image.fromarray(_rgb())
    mpo = Image.open(io.BytesIO(_encode(still, "MPO", save_all=True, append_images=[still])))
    assert mpo.format == "MPO" and len(load_views(mpo) or ()) >= 1  # a phone's JPEG: allowed


def test_jpeg_bytes_decode() -> None:
    out = _check(load_image(_encode(Image.fromarray(_rgb(32, 48)), "JPEG")), 32, 48)
    assert out.std() > 0


@pytest.mark.parametrize("bad", [42, 3.5, ["a.png"], {"image": 1}, object(), True])
def test_wrong_python_type(bad: object) -> None:
    with pytest.raises(UnsupportedInputTypeError, match="expected"):
        load_image(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # also a TypeError for generic callers
        load_image(bad)  # type: ignore[arg-type]


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "missing.jpg"
    with pytest.raises(InvalidInputError, match="missing.jpg") as info:
        load_image(missing)
    assert "does not exist" in str(info.value)


def test_device_path_is_not_called_missing() -> None:
    with pytest.raises(InvalidInputError, match="not a regular file"):
        load_image("/dev/null")


def test_directory_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="directory"):
        load_image(tmp_path)


# ---- Pillow modes ------------------------------------------------------------------------


def test_mode_l_and_1() -> None:
    grey = Image.new("L", (6, 5), 77)
    assert (_check(load_image(grey), 5, 6) == 77).all()
    bw = Image.new("1", (6, 5), 1)
    assert (_check(load_image(bw), 5, 6) == 255).all()


def test_mode_la_composites_over_white() -> None:
    im = Image.new("LA", (4, 3), (0, 0))  # black, fully transparent
    assert (_check(load_image(im), 3, 4) == 255).all()
    im = Image.new("LA", (4, 3), (50, 255))
    assert (load_image(im) == 50).all()


def test_mode_rgba_composites_over_white_not_black() -> None:
    im = Image.new("RGBA", (4, 3), (0, 0, 0, 0))
    im.putpixel((0, 0), (200, 10, 20, 255))
    out = _check(load_image(_encode(im, "PNG")), 3, 4)
    assert tuple(out[0, 0]) == (200, 10, 20)
    assert tuple(out[2, 3]) == (255, 255, 255)


def test_mode_p_without_and_with_transparency() -> None:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * (254 * 3))
    im.putpixel((1, 1), 1)
    out = _check(load_image(im), 4, 4)
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[1, 1]) == (200, 100, 50)
    # palette index 0 transparent -> white
    data = _encode(im, "PNG", transparency=0)
    out = _check(load_image(data), 4, 4)
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[1, 1]) == (200, 100, 50)


def test_gif_with_transparency() -> None:
    im = Image.new("P", (5, 5), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    im.putpixel((2, 2), 1)
    out = _check(load_image(_encode(im, "GIF", transparency=0)), 5, 5)
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[2, 2]) == (255, 0, 0)


def test_mode_cmyk() -> None:
    out = _check(load_image(Image.new("CMYK", (3, 2), (0, 0, 0, 0))), 2, 3)
    assert (out == 255).all()  # no ink is white
    out = load_image(Image.new("CMYK", (3, 2), (0, 255, 255, 0)))
    assert tuple(out[0, 0]) == (255, 0, 0)  # magenta + yellow is red
    jpeg = _encode(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "JPEG", quality=95)
    out = _check(load_image(jpeg), 8, 8)
    assert out[..., 0].mean() < 30 and out[..., 2].mean() > 220  # cyan


def test_mode_ycbcr() -> None:
    rgb = Image.new("RGB", (4, 4), (200, 50, 20))
    out = _check(load_image(rgb.convert("YCbCr")), 4, 4)
    assert np.abs(out.astype(int) - (200, 50, 20)).max() <= 3


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_high_bit_depth_scaled_by_real_range(mode: str) -> None:
    values = np.linspace(1000, 41000, 40, dtype=np.float64).reshape(4, 10)
    if mode == "I":
        im = Image.fromarray(values.astype(np.int32))
    else:  # (Pillow's own convert() to I;16B clips; build it from raw big-endian bytes)
        dtype = ">u2" if mode == "I;16B" else "<u2"
        im = Image.frombytes(mode, (10, 4), values.astype(dtype).tobytes())
    assert im.mode == mode
    out = _check(load_image(im), 4, 10)
    assert out.min() == 0 and out.max() == 255  # stretched, not clipped to white
    assert len(np.unique(out[..., 0])) == 40  # the gradient survives
    assert (np.diff(out[..., 0].ravel().astype(int)) > 0).all()


def test_16bit_png_file() -> None:
    values = (np.arange(16 * 8, dtype=np.uint16).reshape(8, 16) * 500).astype(np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode.startswith("I")
    out = _check(load_image(data), 8, 16)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert len(np.unique(out)) > 100


def test_mode_f() -> None:
    values = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    values[0, 0] = np.nan
    out = _check(load_image(Image.fromarray(values, mode="F")), 3, 4)
    assert out[-1, -1, 0] == 255 and out[0, 1, 0] == 0


def test_constant_16bit_does_not_crash() -> None:
    out = _check(load_image(Image.new("I;16", (3, 3), 40000)), 3, 3)
    assert len(np.unique(out)) == 1


# ---- EXIF orientation --------------------------------------------------------------------


def test_exif_orientation_6_rotates() -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(im, "JPEG", exif=exif.tobytes(), quality=95)
    out = _check(load_image(data), 40, 20)  # height and width swapped
    assert out[:5, :, 0].mean() > 200  # the left (red) half is now on top
    assert out[-5:, :, 0].mean() < 50
    # the raw decode without EXIF handling keeps the stored shape
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.size == (40, 20)


# ---- bad images --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blob", [b"not an image at all", b"\x89PNG\r\n\x1a\n garbage", b"\xff\xd8\xff\xe0" + b"\0" * 9]
)
def test_corrupt_bytes(blob: bytes) -> None:
    with pytest.raises(ImageDecodeError, match="image"):
        load_image(blob)


def test_empty_bytes() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        load_image(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(fmt: str) -> None:
    data = _encode(Image.fromarray(_rgb(64, 64, seed=3)), fmt)
    with pytest.raises(ImageDecodeError, match="truncated|corrupt"):
        load_image(data[: len(data) // 2])


def test_truncated_does_not_flip_pillow_global() -> None:
    from PIL import ImageFile

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    data = _encode(Image.fromarray(_rgb(32, 32)), "PNG")
    with pytest.raises(ImageDecodeError):
        load_image(data[:-30])
    assert ImageFile.LOAD_TRUNCATED_IMAGES == before


def test_corrupt_file_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff" + b"junk" * 10)
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        load_image(path)


def test_zero_size() -> None:
    with pytest.raises(ImageSizeError, match="at least 1x1"):
        load_image(np.zeros((0, 5, 3), dtype=np.uint8))
    with pytest.raises(ImageSizeError):
        load_image(np.zeros((5, 0), dtype=np.uint8))
    with pytest.raises(ImageSizeError):
        load_image(Image.new("RGB", (0, 0)))


def test_decompression_bomb_header_is_refused_before_decode() -> None:
    with pytest.raises(ImageTooLargeError, match="too large|limit"):
        load_image(_png_header_only(100_000, 100_000))  # 10 gigapixels, tiny file


def test_max_pixels_checked_from_header() -> None:
    # 20,000 x 5,000 claims 100 MP, above the 40 MP default but below Pillow's hard error
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        load_image(_png_header_only(8000, 6000))


def test_small_max_pixels_real_image(tmp_path: Path) -> None:
    arr = _rgb(50, 60)
    path = tmp_path / "big.png"
    Image.fromarray(arr).save(path)
    with pytest.raises(ImageTooLargeError, match="3,000"):
        load_image(path, max_pixels=2999)
    _check(load_image(path, max_pixels=3000), 50, 60)
    with pytest.raises(ImageTooLargeError):
        load_image(arr, max_pixels=100)
    with pytest.raises(ImageTooLargeError):
        load_image(Image.fromarray(arr), max_pixels=100)


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        load_image(b"junk")


# ---- animated and multi-page images (stop 34) ----------------------------------------------

def _frames_bytes(fmt: str, frames: list[Image.Image]) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:],
                   **({"duration": 100, "loop": 0} if fmt in ("GIF", "WEBP", "PNG") else {}))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF", "PNG"])
def test_every_frame_of_an_animated_image_is_a_view(fmt: str) -> None:
    """A harmful line on a second frame passed unread when only the first was decoded."""
    blank = Image.new("RGB", (64, 32), "white")
    marked = blank.copy()
    marked.paste((0, 0, 0), (10, 10, 30, 20))
    views = load_views(_frames_bytes(fmt, [blank, blank.copy(), marked]))
    assert views is not None and len(views) == 2  # the repeat of the first frame is dropped
    assert views[0].min() == 255 and views[1].min() == 0
    im = Image.open(io.BytesIO(_frames_bytes(fmt, [blank, marked])))
    opened = load_views(im)
    assert opened is not None and len(opened) == 2 and im.tell() == 0


def test_too_many_frames_are_refused_not_read_in_part() -> None:
    from vlmguard.errors import AnimatedImageError
    from vlmguard.image import MAX_FRAMES

    frames = [Image.new("RGB", (16, 16), (k * 9, 0, 0)) for k in range(MAX_FRAMES + 1)]
    with pytest.raises(AnimatedImageError, match="frames"):
        load_views(_frames_bytes("GIF", frames))
    frames = [Image.new("RGB", (40, 40), (k * 9, 0, 0)) for k in range(3)]
    with pytest.raises(ImageTooLargeError):  # the frames together count against the cap
        load_views(_frames_bytes("GIF", frames), max_pixels=4000)


def test_each_later_page_is_checked_against_max_pixels_before_it_is_decoded() -> None:
    """s36 audit: a TIFF's pages each have their own size, and only the first page's was
    checked, so an 8x8 first page let 36 MP pages behind it decode whatever max_pixels said."""
    from unittest import mock

    small, big = Image.new("L", (8, 8), 255), Image.new("L", (300, 300), 255)
    data = _frames_bytes("TIFF", [small, big, big])
    loaded: list[tuple[int, int]] = []
    real_load = Image.Image.load

    def load(im: Image.Image) -> object:
        loaded.append(im.size)
        return real_load(im)

    with mock.patch.object(Image.Image, "load", load):
        with pytest.raises(ImageTooLargeError, match="max_pixels"):  # one page over the cap
            load_views(data, max_pixels=50_000)
    assert (300, 300) not in loaded  # refused from the page's header, not after decoding it
    with pytest.raises(ImageTooLargeError, match="together"):  # each fits, the sum does not
        load_views(data, max_pixels=150_000)
    views = load_views(data, max_pixels=200_000)
    assert views is not None and [v.shape for v in views] == [(8, 8, 3), (300, 300, 3)]


def test_a_later_frame_has_its_alpha_dropped_face_read_too() -> None:
    """s36 audit: ink hidden under alpha was read in a still image (both faces) but not as
    frame 2 of an APNG, which had only its faithful face."""
    hidden = _white_text_on_clear()
    blank = Image.new("RGBA", hidden.size, (255, 255, 255, 255))
    buf = io.BytesIO()
    blank.save(buf, "PNG", save_all=True, append_images=[hidden], default_image=False,
               disposal=1, blend=0)
    views = load_views(buf.getvalue())
    assert views is not None
    dropped = np.asarray(hidden.convert("RGB"))
    assert any((v == dropped).all() for v in views)
    assert len(views) == 2  # frame 2 over white repeats the blank frame 1: dropped
    # the same face twice (frame 2 repeats frame 1) is read once
    buf = io.BytesIO()
    hidden.save(buf, "PNG", save_all=True, append_images=[hidden.copy()], default_image=False,
                disposal=1, blend=0)
    twice = load_views(buf.getvalue())
    assert twice is not None and len(twice) == 2


# ---- the two faces of a transparent or 16-bit image (stop 24) ------------------------------

def _white_text_on_clear() -> Image.Image:
    """White text on a fully transparent black background: blank over white, plain text to
    anything that drops alpha (Pillow's ``convert("RGB")``, most VLM preprocessing)."""
    from PIL import ImageDraw

    im = Image.new("RGBA", (300, 60), (0, 0, 0, 0))
    ImageDraw.Draw(im).rectangle([20, 20, 280, 40], fill=(255, 255, 255, 255))
    return im


def test_transparent_image_has_its_alpha_dropped_face_too() -> None:
    im = _white_text_on_clear()
    over_white, dropped = load_views(im)
    assert (over_white == 255).all()  # invisible to a reader that composites over white
    assert (dropped == np.asarray(im.convert("RGB"))).all()
    assert len(load_views(np.asarray(im))) == 2  # the same for an HxWx4 array


def test_opaque_images_have_one_face() -> None:
    rgba = Image.new("RGBA", (40, 30), (10, 200, 30, 255))
    assert len(load_views(rgba)) == 1
    assert len(load_views(Image.new("RGB", (40, 30), (10, 200, 30)))) == 1
    # transparency whose hidden colours match white changes nothing a reader could see
    assert len(load_views(Image.new("RGBA", (40, 30), (255, 255, 255, 0)))) == 1
    assert (load_image(rgba) == load_views(rgba)[0]).all()


def test_sixteen_bit_image_has_its_clipped_face_too() -> None:
    """Dark-grey marks (100 of 65535) beside one white pixel vanish when stretched to the
    image's range, and show when clipped at 255 as Pillow's convert("RGB") does."""
    arr = np.zeros((60, 300), np.uint16)
    arr[20:40, 20:280] = 100
    arr[0, 0] = 65535
    im = Image.fromarray(arr)
    stretched, clipped = load_views(im)
    assert stretched[30, 100].max() <= 1 and clipped[30, 100].min() == 100


def test_a_plain_face_that_differs_only_off_a_sampling_grid_is_still_read() -> None:
    """Stop 35 audit: the faces were compared on a strided grid (every 2nd pixel above
    1 MP), so text whose pixels all sat off the grid hid the plain face entirely."""
    rgb = np.full((1200, 2400, 3), 255, np.uint8)  # 2.9 MP: a grid step of 2
    plain = rgb.copy()
    plain[200:300:2, 100:2000] = 0  # 'ink' on odd and even rows alike...
    plain[201:300:2, 100:2000] = 0
    plain[::2, ::2] = 255           # ...but never on the grid points
    assert len(_with_plain(rgb, plain)) == 2
    assert len(_with_plain(rgb, rgb.copy())) == 1


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def _scan_bomb(scans: int, before_eoi: bytes = b"") -> bytes:
    """A 64x64 grey progressive JPEG of one DC scan and ``scans - 1`` empty AC scans (10
    bytes each): the s37 audit's 78 KiB file of 8,000 decoded for 20 s at 36 MP."""
    out = b"\xff\xd8" + _jpeg_segment(0xFFDB, b"\x00" + bytes([1] * 64))
    out += _jpeg_segment(0xFFC2, struct.pack(">BHHB", 8, 64, 64, 1) + b"\x01\x11\x00")
    out += _jpeg_segment(0xFFC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")  # DC: one code
    out += _jpeg_segment(0xFFC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")  # AC: EOB only
    out += _jpeg_segment(0xFFDA, b"\x01\x01\x00\x00\x00\x00") + b"\x00" * 8
    out += _jpeg_segment(0xFFDA, b"\x01\x01\x00\x01\x3f\x00") * (scans - 1)
    return out + before_eoi + b"\xff\xd9"


def test_a_jpeg_with_too_many_scans_is_refused_before_it_is_decoded() -> None:
    """s37 audit: each scan is a pass over every pixel, and nothing bounded their number."""
    from vlmguard.image import MAX_SCANS

    assert _check(load_image(_scan_bomb(MAX_SCANS)), 64, 64).min() >= 0
    with pytest.raises(ImageDecodeError, match="MAX_SCANS"):
        load_image(_scan_bomb(MAX_SCANS + 1))
    with pytest.raises(ImageDecodeError, match="MAX_SCANS"):  # lazily opened by the caller
        load_image(Image.open(io.BytesIO(_scan_bomb(MAX_SCANS + 1))))
    # an MPO's later frame is walked from its own offset, before it is decoded
    still = Image.new("RGB", (64, 64), "white")
    mpo = _frames_bytes("MPO", [still, still.copy()])
    second = Image.open(io.BytesIO(mpo))
    second.seek(1)
    with pytest.raises(ImageDecodeError, match="MAX_SCANS"):
        load_views(mpo[:second.tile[0][2]] + _scan_bomb(MAX_SCANS + 1))


def test_scans_are_counted_by_walking_segments_not_by_searching_bytes() -> None:
    """An SOS inside a segment's payload (an EXIF thumbnail) or after EOI (a phone's
    appended video) is not one libjpeg decodes for this frame; real files pass."""
    from vlmguard.image import MAX_SCANS, _count_scans

    sos = _jpeg_segment(0xFFDA, b"\x01\x01\x00\x01\x3f\x00")
    in_comment = _scan_bomb(2, _jpeg_segment(0xFFFE, sos * 100))
    assert _count_scans(io.BytesIO(in_comment + sos * 100), 0, MAX_SCANS) == 2
    assert _check(load_image(in_comment + sos * 100), 64, 64).shape == (64, 64, 3)
    photo = Image.effect_mandelbrot((160, 120), (-2, -1.5, 1, 1.5), 50).convert("RGB")
    for kw in ({}, {"progressive": True}, {"progressive": True, "restart_marker_blocks": 1}):
        data = _encode(photo, "JPEG", **kw)
        assert _count_scans(io.BytesIO(data), 0, MAX_SCANS) == (10 if kw else 1)
        _check(load_image(data), 120, 160)


def test_a_large_jpeg_is_decoded_at_the_dct_scale_a_vlm_still_reads_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A JPEG of at least twice DRAFT_SIDE is decoded at a DCT scale that keeps its long side
    at DRAFT_SIDE or more (a 4,032 x 3,024 photo at 2,016 x 1,512); a smaller one, and any
    other format, in full; DRAFT_SIDE 0 turns it off."""
    import vlmguard.image as image_module

    def encoded(size: tuple[int, int], fmt: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", size, (120, 160, 200)).save(buf, fmt)
        return buf.getvalue()

    assert image_module.DRAFT_SIDE == 1600
    assert load_views(encoded((4032, 3024), "JPEG"))[0].shape == (1512, 2016, 3)
    assert load_views(encoded((3000, 1000), "JPEG"))[0].shape == (1000, 3000, 3)
    assert load_views(encoded((4032, 3024), "PNG"))[0].shape == (3024, 4032, 3)
    monkeypatch.setattr(image_module, "DRAFT_SIDE", 0)
    assert load_views(encoded((4032, 3024), "JPEG"))[0].shape == (3024, 4032, 3)


def test_a_large_mpo_decodes_every_frame_at_its_dct_scale() -> None:
    """Stop 37 review: an MPO's second frame kept the first one's DCT scale through a seek
    that restored its full size, so a 3,300-px two-frame MPO read as truncated."""
    buf = io.BytesIO()
    first, second = (Image.new("RGB", (3300, 2400), c) for c in ((200, 30, 30), (30, 30, 200)))
    first.save(buf, format="MPO", save_all=True, append_images=[second])
    assert [v.shape for v in load_views(buf.getvalue())] == [(1200, 1650, 3)] * 2
