"""Join synthesised parts into one training file, and cut a fine-tuning mix from it.

The synthesiser's parts are built where they are cheapest (the text parts in seconds here,
the rendered parts on many cores), so the set that trains a model is a merge of several
JSONL files, deduplicated by example id (a hash of the inputs).

A model that already learnt the older data is updated with a *mix*: every training example
of the seeds it has not seen, every example of ``--always`` sources (parts whose recipe
changed), and a replayed share of the rest, so the update costs a fraction of a full epoch
without forgetting. Validation and test rows are kept whole, so the threshold is still chosen
on the full validation split.

    python -m training.synthesis.merge --out runs/data3/synth.jsonl A.jsonl B.jsonl.gz
    python -m training.synthesis.merge --out runs/data3/mix.jsonl runs/data3/synth.jsonl \\
        --new-seeds-from training/synthesis/data/harmful_asks_2.jsonl \\
        --always jailbreak --replay 0.35
"""
from __future__ import annotations

import argparse
import logging
import random
from collections import Counter
from pathlib import Path

from .corpora import handwritten_file_seeds
from .offline import Example, dedupe, read_jsonl, write_jsonl

log = logging.getLogger("vlmguard.synthesis")


def new_seed_ids(paths: list[Path]) -> set[str]:
    """Seed ids of hand-written seed files (harmful asks or look-alikes)."""
    return {seed.seed_id for p in paths for seed in handwritten_file_seeds(p)}


def finetune_mix(examples: list[Example], new_ids: set[str], always: set[str],
                 replay: float, seed: int = 0) -> list[Example]:
    """Training rows of new seeds and ``always`` sources, a ``replay`` share of the other
    training rows, and every validation and test row."""
    rng = random.Random(seed)
    return [ex for ex in examples
            if ex.split != "train" or ex.seed_id in new_ids or ex.source in always
            or ex.origin.split("+")[0] in always or rng.random() < replay]


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", type=Path, nargs="+", help=".jsonl or .jsonl.gz parts")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--new-seeds-from", type=Path, nargs="*", default=[],
                    help="hand-written seed files whose rows the model has not seen")
    ap.add_argument("--always", default="",
                    help="comma-separated sources (jailbreak) or origins (padded) kept whole")
    ap.add_argument("--replay", type=float, default=1.0,
                    help="share of the other training rows kept (1.0: a plain merge)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = dedupe([ex for p in args.inputs for ex in read_jsonl(p)])
    if args.new_seeds_from or args.replay < 1.0:
        always = {s for s in args.always.split(",") if s}
        rows = finetune_mix(rows, new_seed_ids(args.new_seeds_from), always, args.replay,
                            args.seed)
    write_jsonl(rows, args.out)
    log.info("wrote %d examples to %s: %s", len(rows), args.out,
             dict(Counter(f"{e.split}/{'unsafe' if e.unsafe else 'safe'}" for e in rows)))


if __name__ == "__main__":
    main()
