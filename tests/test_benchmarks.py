"""The latency benchmark's inputs are what their names say."""

from __future__ import annotations

from benchmarks.latency import JUDGE_TOKENS, NO_IMAGE, text_of_tokens
from vlmguard import Guard


def test_judge_length_inputs_fill_their_windows(guard: Guard) -> None:
    for n in JUDGE_TOKENS:
        windows = guard.encoder.encode(NO_IMAGE, text_of_tokens(guard, n))
        assert len(windows) == 1 and len(windows[0].encoding.ids) == n
