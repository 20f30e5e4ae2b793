"""Type stub for ``vlmguard._native``, the optional C extension built from bindings/native.c.

It has one function; ``vlmguard.preprocess.resize_normalize`` wraps it (and falls back to
NumPy when the extension is missing or disabled).
"""

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray
from typing_extensions import Buffer

# Any C-contiguous buffer is read; NumPy arrays are named too because NumPy's stubs only
# declare ``__buffer__`` (the Buffer protocol) for Python >= 3.12.
def resize_normalize(
    rgb: Buffer | NDArray[np.uint8],
    height: int,
    width: int,
    mean: Iterable[float],
    std: Iterable[float],
    /,
) -> bytearray:
    """Resize a C-contiguous HxWx3 uint8 buffer to ``height`` x ``width`` (box pre-reduction
    when downscaling >= 2x on both axes, then bilinear with half-pixel centres and clamped
    edges) and normalise ``(v / 255 - mean) / std`` channel-first: a 3 x height x width float32
    tensor in native byte order, returned as a bytearray.

    ``height`` and ``width`` are in 1..65536; ``mean`` and ``std`` hold 3 finite floats (one per
    RGB channel), ``std`` non-zero. Raises ValueError for anything else, MemoryError when the
    output cannot be allocated. Releases the GIL while it computes.
    """
