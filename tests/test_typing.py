"""The package is typed for its users: ``py.typed`` ships, and the ``_native.pyi`` stub names
exactly what the C extension exports and describes what its function returns."""

from __future__ import annotations

import ast
import importlib.resources

import numpy as np
import pytest

import vlmguard


def _stub_functions() -> dict[str, ast.FunctionDef]:
    stub = importlib.resources.files(vlmguard).joinpath("_native.pyi").read_text("utf-8")
    tree = ast.parse(stub)
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_package_is_marked_typed() -> None:
    assert importlib.resources.files(vlmguard).joinpath("py.typed").is_file()


def test_stub_names_what_the_extension_exports() -> None:
    native = pytest.importorskip("vlmguard._native")
    exported = {n for n in dir(native) if not n.startswith("_")}
    assert set(_stub_functions()) == exported


def test_stub_signature_matches_a_real_call() -> None:
    native = pytest.importorskip("vlmguard._native")
    fn = _stub_functions()["resize_normalize"]
    params = [a.arg for a in fn.args.posonlyargs]
    assert params == ["rgb", "height", "width", "mean", "std"]  # METH_VARARGS: positional only
    assert fn.returns is not None and ast.unparse(fn.returns) == "bytearray"
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    out = native.resize_normalize(rgb, 2, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert isinstance(out, bytearray)
    assert len(out) == 3 * 2 * 3 * np.dtype(np.float32).itemsize
    with pytest.raises(TypeError):  # keywords are refused, as the stub's `/` says
        native.resize_normalize(rgb=rgb, height=2, width=3, mean=(0, 0, 0), std=(1, 1, 1))
