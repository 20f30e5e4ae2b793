"""Random and hostile inputs to the public API only ever give a result or a vlmguard error.

Also keeps the probe's mutation corpus as a regression: a few hundred deterministically
mutated images (bit flips, truncations, splices, header edits) through ``load_image``.
"""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from vlmguard import Guard, RewriteResult
from vlmguard.errors import InvalidInputError, VLMGuardError
from vlmguard.image import load_image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

HOSTILE_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF),
            max_size=200),
    st.binary(max_size=200),
    st.sampled_from(["", " ", "\x00", "\udcff", "USER_REQUEST>>>", "a" * 5000, "\u200d" * 50,
                     "中" * 3000, "\ufeff\u202e", None]),
    st.integers(), st.floats(), st.lists(st.text(max_size=5), max_size=3),
)


def _small_png(seed: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (rng.integers(1, 24), rng.integers(1, 24), 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, "PNG")
    return buf.getvalue()


HOSTILE_IMAGE = st.one_of(
    st.none(),
    st.binary(max_size=400),
    st.integers(0, 1000).map(_small_png),
    st.builds(lambda h, w, c, dt: np.zeros((h, w, c), dtype=dt),
              st.integers(0, 40), st.integers(0, 40), st.sampled_from([1, 2, 3, 4, 5]),
              st.sampled_from([np.uint8, np.float32, np.int16, np.bool_])),
    st.sampled_from([12.5, "/nonexistent/x.png", "/", b"", object(), [1, 2, 3],
                     np.zeros((4, 4, 3, 1), np.uint8)]),
)


def _ok_or_typed(call) -> None:
    try:
        out = call()
    except VLMGuardError:
        return
    assert isinstance(out, RewriteResult) or (
        isinstance(out, list) and all(isinstance(r, RewriteResult) for r in out))


@SETTINGS
@given(image=HOSTILE_IMAGE, text=HOSTILE_TEXT)
def test_rewrite_gives_a_result_or_a_typed_error(guard: Guard, image, text) -> None:
    _ok_or_typed(lambda: guard.rewrite(image, text))


@SETTINGS
@given(text=HOSTILE_TEXT, concepts=st.one_of(st.lists(HOSTILE_TEXT, max_size=4), HOSTILE_TEXT),
       ocr=HOSTILE_TEXT, has_image=st.one_of(st.booleans(), st.integers(), st.none()))
def test_rewrite_seen_gives_a_result_or_a_typed_error(guard: Guard, text, concepts, ocr,
                                                      has_image) -> None:
    _ok_or_typed(lambda: guard.rewrite_seen(text, concepts, ocr, has_image))


@SETTINGS
@given(items=st.one_of(st.lists(st.tuples(HOSTILE_IMAGE, HOSTILE_TEXT), max_size=3),
                       st.lists(HOSTILE_TEXT, max_size=2), HOSTILE_TEXT))
def test_rewrite_batch_gives_results_or_a_typed_error(guard: Guard, items) -> None:
    _ok_or_typed(lambda: guard.rewrite_batch(items))


# ---- the mutation corpus ---------------------------------------------------------------------
def _seeds() -> list[bytes]:
    rng = np.random.default_rng(8)
    arr = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    out = []
    for fmt, kw in [("PNG", {}), ("JPEG", {"quality": 80}), ("GIF", {}), ("BMP", {}),
                    ("TIFF", {"compression": "tiff_lzw"}), ("WEBP", {"quality": 70}),
                    ("PNG", {"mode": "RGBA"}), ("TIFF", {"mode": "I;16"})]:
        mode = kw.pop("mode", None)
        buf = io.BytesIO()
        try:
            (im.convert(mode) if mode else im).save(buf, fmt, **kw)
        except (KeyError, OSError):
            continue
        out.append(buf.getvalue())
    return out


def _mutate(data: bytes, r: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(r.randint(1, 4)):
        op = r.randrange(6)
        i = r.randrange(len(b)) if b else 0
        if op == 0 and b:                    # flip bits
            b[i] ^= 1 << r.randrange(8)
        elif op == 1:                        # truncate
            b = b[: r.randrange(len(b) + 1)]
        elif op == 2 and b:                  # overwrite a run with an extreme byte
            b[i:i + r.randint(1, 8)] = bytes([r.choice([0, 0xFF, 0x7F, 0x80])]) * r.randint(1, 8)
        elif op == 3:                        # insert random bytes
            b[i:i] = r.randbytes(r.randint(1, 16))
        elif op == 4 and len(b) > 8:         # duplicate a chunk (repeat a header or tile)
            j = r.randrange(len(b))
            b[i:i] = b[j:j + r.randint(1, 64)]
        elif op == 5 and len(b) > 24:        # inflate a size-like field in the header
            k = r.randrange(4, min(len(b) - 4, 40))
            b[k:k + 4] = r.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\x00\x01\x00\x00"])
    return bytes(b)


CORPUS = [(k, _mutate(seed, random.Random(1000 * k + j)))
          for k, seed in enumerate(_seeds()) for j in range(40)]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt tags
def test_mutation_corpus_only_gives_images_or_typed_errors() -> None:
    assert len(CORPUS) >= 240
    decoded = refused = 0
    for k, data in CORPUS:
        try:
            rgb = load_image(data, max_pixels=4_000_000)
        except InvalidInputError:
            refused += 1
            continue
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, k
        assert rgb.flags.c_contiguous and rgb.shape[0] * rgb.shape[1] <= 4_000_000
        decoded += 1
    assert decoded and refused  # the corpus exercises both paths


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_images_through_the_guard(guard: Guard) -> None:
    for _, data in CORPUS[::12]:
        _ok_or_typed(lambda d=data: guard.rewrite(d, "What is in this picture?"))
