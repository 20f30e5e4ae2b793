"""Two guard bundles on the same requests, paired: what the round rules of RUNS.md read.

    python -m training.compare --b runs/bundle_X --set training/heldout/blind_38.jsonl \\
        --set training/heldout/blind_photos_38.jsonl --redteam --json cmp.json

``--a`` defaults to the bundled judge. Each request is scored by both guards one after the
other in one process, so both see the same machine. Harmful asks are compared pair by pair
with an exact McNemar test: on a few hundred asks a difference of a few is noise (stop 33:
404 against 406 of 482 asks, p = 0.44), and a fixed bar read without it decides by chance.
A set file is JSON lines with ``text`` and ``label`` (``unsafe`` or anything else), and a
``photo`` (a file name under ``training.evaluate.PHOTO_DIR``) where the request has one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from math import comb
from pathlib import Path

from training import evaluate
from training.synthesis import corpora
from vlmguard import Guard


def mcnemar_one_sided(only_a: int, only_b: int) -> float:
    """P(``only_a`` or more of the discordant pairs go A's way | neither judge is better):
    small when A really catches (or flags) more than B."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(sum(comb(n, i) for i in range(only_a, n + 1)) / 2 ** n)


@dataclass(frozen=True)
class Paired:
    """One set scored by both judges: counts, rates and the discordant pairs."""

    name: str
    n_unsafe: int
    n_benign: int
    caught_a: int
    caught_b: int
    flagged_a: int
    flagged_b: int
    caught_only_a: int
    caught_only_b: int
    flagged_only_a: int
    flagged_only_b: int

    def rates(self, judge: str) -> tuple[float | None, float | None]:
        """(recall, FPR) of judge ``a`` or ``b``; None where the set has no such rows."""
        caught, flagged = getattr(self, f"caught_{judge}"), getattr(self, f"flagged_{judge}")
        return (caught / self.n_unsafe if self.n_unsafe else None,
                flagged / self.n_benign if self.n_benign else None)

    @property
    def p_recall_a_higher(self) -> float:
        """McNemar p that A catches more harmful asks than B."""
        return mcnemar_one_sided(self.caught_only_a, self.caught_only_b)

    @property
    def p_recall_b_higher(self) -> float:
        return mcnemar_one_sided(self.caught_only_b, self.caught_only_a)


def pair(name: str, rows: Sequence[tuple[bool, bool, bool]]) -> Paired:
    """``rows``: (unsafe label, A flags it, B flags it) per request."""
    harm = [(a, b) for u, a, b in rows if u]
    safe = [(a, b) for u, a, b in rows if not u]
    return Paired(name, len(harm), len(safe),
                  sum(a for a, _ in harm), sum(b for _, b in harm),
                  sum(a for a, _ in safe), sum(b for _, b in safe),
                  sum(a and not b for a, b in harm), sum(b and not a for a, b in harm),
                  sum(a and not b for a, b in safe), sum(b and not a for a, b in safe))


def pooled(name: str, sets: Sequence[Paired]) -> Paired:
    """The sets added up (McNemar on the pooled pairs)."""
    fields = [f for f in Paired.__dataclass_fields__ if f != "name"]
    return Paired(name, *(sum(getattr(s, f) for s in sets) for f in fields))


def read_set(path: Path, photo_dir: Path = evaluate.PHOTO_DIR
             ) -> list[tuple[bool, bytes | None, str]]:
    """(unsafe, photo bytes or None, text) per row of a hand-written set file."""
    out = []
    for r in evaluate.read_jsonl(path):
        photo = (photo_dir / r["photo"]).read_bytes() if r.get("photo") else None
        out.append((r["label"] == "unsafe", photo, r["text"]))
    return out


def score_both(a: Guard, b: Guard, name: str,
               rows: Sequence[tuple[bool, bytes | None, str]]) -> Paired:
    """Each request through A then B, so both see the same background load."""
    return pair(name, [(u, not a.rewrite(img, text).safe, not b.rewrite(img, text).safe)
                       for u, img, text in rows])


def redteam_rows(data: Path) -> list[tuple[bool, bytes | None, str]]:
    """The held-out red-team sources as ``training.evaluate`` reads them (all harmful)."""
    items = evaluate.held_out_items(data)
    return [(True, None, it.text) for g in evaluate.HELD_OUT_REDTEAM for it in items.get(g, [])]


def _rate(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def report(results: Sequence[Paired]) -> str:
    """A Markdown table: each set's rates for both judges and the McNemar p both ways."""
    lines = ["| set | A recall | B recall | A FPR | B FPR | caught A only / B only | "
             "McNemar p (A catches more; B catches more) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        (ra, fa), (rb, fb) = r.rates("a"), r.rates("b")
        lines.append(f"| {r.name} | {_rate(ra)} | {_rate(rb)} | {_rate(fa)} | {_rate(fb)} | "
                     f"{r.caught_only_a} / {r.caught_only_b} | "
                     f"{r.p_recall_a_higher:.3f}; {r.p_recall_b_higher:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", default=None, help="bundle A (default: the bundled judge)")
    ap.add_argument("--b", required=True, help="bundle B")
    ap.add_argument("--set", action="append", default=[], type=Path,
                    help="a JSON-lines set (repeatable); they are also reported pooled")
    ap.add_argument("--redteam", action="store_true",
                    help="also the held-out red-team sources (SimpleSafetyTests, CoCoNot)")
    ap.add_argument("--shared-data", type=Path, default=Path(corpora.SHARED_DATA))
    ap.add_argument("--json", type=Path, default=None, help="write every count as JSON")
    args = ap.parse_args(argv)
    if not args.set and not args.redteam:
        ap.error("give at least one --set or --redteam")
    a, b = Guard.from_pretrained(args.a), Guard.from_pretrained(args.b)
    results = [score_both(a, b, p.stem, read_set(p)) for p in args.set]
    if len(results) > 1:
        results.append(pooled("sets pooled", results))
    if args.redteam:
        results.append(score_both(a, b, "held-out red-team", redteam_rows(args.shared_data)))
    print(f"A = {args.a or 'the bundled judge'}, B = {args.b}")
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(
            [asdict(r) | {"p_recall_a_higher": r.p_recall_a_higher,
                          "p_recall_b_higher": r.p_recall_b_higher} for r in results],
            indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
