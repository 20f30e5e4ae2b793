"""Typos as people (and OCR) make them: the one home of the misspelling used by
``training.typo_distil`` (to train on) and ``training.evaluate`` (to measure)."""

from __future__ import annotations

import random
import re

TRAIN_KINDS = ("drop", "swap", "double", "insert")
HELD_OUT_KIND = "neighbour"
"""A key's neighbour typed instead: never trained on, so the evaluation reads it blind."""
KINDS = (*TRAIN_KINDS, HELD_OUT_KIND)
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_WORD = re.compile(r"[A-Za-z]{4,}")


def has_word(text: str) -> bool:
    """Whether ``text`` has a word a typo can go in (four or more letters)."""
    return _WORD.search(text) is not None


def _neighbour(c: str, rnd: random.Random) -> str:
    for row in _ROWS:
        i = row.find(c.lower())
        if i >= 0:
            n = rnd.choice([row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)])
            return n.upper() if c.isupper() else n
    return c


def misspell(text: str, rnd: random.Random, kinds: tuple[str, ...] = TRAIN_KINDS,
             n: int = 1, span: int = 400) -> str:
    """``text`` with ``n`` typos inside its first ``span`` characters, each in a word of four
    or more letters and never its first letter (people rarely miss that one)."""
    for _ in range(n):
        words = [m for m in _WORD.finditer(text) if m.start() < span]
        if not words:
            return text
        m = rnd.choice(words)
        w, i = m.group(), rnd.randrange(1, len(m.group()))
        kind = rnd.choice(kinds)
        if kind == "drop":
            w = w[:i] + w[i + 1:]
        elif kind == "swap":  # two neighbouring letters that differ, never the first
            pairs = [j for j in range(1, len(w) - 1) if w[j] != w[j + 1]]
            j = rnd.choice(pairs) if pairs else i
            w = (w[:j] + w[j + 1] + w[j] + w[j + 2:]) if pairs else w[:i] + w[i + 1:]
        elif kind == "double":
            w = w[:i] + w[i] + w[i:]
        elif kind == "insert":
            w = w[:i] + rnd.choice("abcdefghijklmnopqrstuvwxyz") + w[i:]
        elif kind == "neighbour":
            w = w[:i] + _neighbour(w[i], rnd) + w[i + 1:]
        else:
            raise ValueError(f"unknown typo kind {kind!r}; known: {KINDS}")
        text = text[:m.start()] + w + text[m.end():]
    return text
