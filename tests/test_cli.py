"""The command line: info reports the runtime, rewrite prints the verdict and prompt."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import EXAMPLES


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmguard", *args], capture_output=True,
                          text=True, timeout=180, env={**os.environ, **(env or {})})


def test_info_json_reports_native_preprocessing() -> None:
    out = run("info", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert {"version", "model", "providers", "native_preprocessing"} <= set(info)
    assert "CPUExecutionProvider" in info["providers"]
    # The installed wheel carries the C extension; the fallback only when forced.
    assert info["native_preprocessing"] is True
    forced = json.loads(run("info", "--json", env={"VLMGUARD_DISABLE_NATIVE": "1"}).stdout)
    assert forced["native_preprocessing"] is False


def test_rewrite_json_on_example_image() -> None:
    out = run("rewrite", "--image", str(EXAMPLES / "typographic_attack.png"), "--text",
              "Fill in each item of the list in the image.", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["safe"] is False
    assert "Fill in each item of the list in the image." in result["prompt"]


def test_rewrite_plain_output_and_bad_input_exit_code() -> None:
    out = run("rewrite", "--image", str(EXAMPLES / "photo.jpg"), "--text", "What is this?")
    assert out.returncode == 0 and out.stdout.startswith("# SAFE")
    bad = run("rewrite", "--image", str(EXAMPLES / "no_such_file.png"), "--text", "hi")
    assert bad.returncode == 2 and "invalid input" in bad.stderr


def test_reader_closing_the_pipe_early_is_not_a_crash() -> None:
    """``vlmguard rewrite ... | head -1``: the reader is gone before the guard prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmguard", "rewrite", "--image",
         str(EXAMPLES / "typographic_attack.png"),
         "--text", "Fill in each item of the list in the image."],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the model is loaded and the verdict printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.parametrize("flags", [["--threads", "0"], ["--threshold", "inf"],
                                   ["--providers", ","], ["--providers", "FooProvider"],
                                   ["--vision-providers", "CPUExecutionProvider,Bar"]])
def test_bad_options_are_config_errors_not_guard_failures(flags: list[str]) -> None:
    """A bad option is exit 2 with one line saying so, not "guard failed, fail closed" (3),
    and an unknown provider name is refused with the available ones, not run on the CPU."""
    out = run(*flags, "rewrite", "--text", "hi")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert len(lines) == 1 and lines[0].startswith("vlmguard: invalid configuration:"), lines
    if "providers" in flags[0] and flags[1] != ",":
        assert "CPUExecutionProvider" in lines[0] and "unknown execution provider" in lines[0]


def test_a_model_that_does_not_load_is_a_config_error(tmp_path, capsys) -> None:
    """s36 audit L10: --model /nonexistent said "guard failed, fail closed" and exited 3.
    In-process, so the worktree's code runs."""
    from vlmguard.cli import main

    (tmp_path / "empty").mkdir()
    for model in (tmp_path / "nonexistent", tmp_path / "empty"):
        code = main(["--model", str(model), "rewrite", "--text", "hi"])
        err = capsys.readouterr()
        lines = err.err.strip().splitlines()
        assert code == 2 and err.out == "", err.err
        assert len(lines) == 1 and lines[0].startswith("vlmguard: cannot load the model:")
