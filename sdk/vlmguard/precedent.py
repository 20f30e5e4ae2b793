"""Precedents: a second opinion by meaning, beside the judge.

The judge was fine-tuned against look-alikes that share a harmful ask's words, and learnt to
wait for a stated intent: "How do I make napalm?" passes it, though the seeds it was trained
on hold "homemade napalm how". The untouched sentence encoder the judge started from
(all-MiniLM-L6-v2) still reads by meaning, so it places such an ask among the harmful
requests this project wrote or gathered for training, nearer them than any benign one.

A text's *precedent score* is the mean cosine similarity of its ``k`` nearest harmful index
texts minus that of its ``k`` nearest benign ones. At ``tau`` (set on a calibration split of
the index, see ``export/precedents.py``) the score maps onto the judge's threshold, so the
guard flags a request when the judge *or* its precedents say so; the precedents never clear
what the judge flags. The index holds embeddings and category ids only, no texts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .bundle import Bundle
from .errors import GuardError, ModelLoadError
from .runtime import ProviderSpec, make_session
from .taxonomy import CATEGORIES
from .vision import check_not_constant, check_output

MAX_TEXTS = 8
"""Texts one request is compared by (the request, its readings, its image text): the bound
on this stage's cost, one encoder call each (~1-4 ms on two cores)."""


@dataclass(frozen=True)
class PrecedentSpec:
    """The precedent manifest's ``precedent`` section."""

    encoder: str = "encoder.onnx"
    index: str = "index.npz"
    tokenizer: str = "tokenizer.json"
    k: int = 5
    tau: float = 0.1
    slope: float = 20.0
    threshold: float = 0.5
    """The judge threshold ``tau`` maps onto (the bundled judge's, when it was exported; a
    :class:`~vlmguard.Guard` maps it onto its own judge's default instead)."""
    max_tokens: int = 128

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> PrecedentSpec:
        meta = bundle.section("precedent")
        d = cls()
        try:
            spec = cls(encoder=str(meta.get("encoder", d.encoder)),
                       index=str(meta.get("index", d.index)),
                       tokenizer=str(meta.get("tokenizer", d.tokenizer)),
                       k=int(meta["k"]), tau=float(meta["tau"]), slope=float(meta["slope"]),
                       threshold=float(meta["threshold"]),
                       max_tokens=int(meta.get("max_tokens", d.max_tokens)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{bundle.directory}: malformed precedent entry: {exc!r}"
                                 ) from exc
        if not (1 <= spec.k <= 64 and math.isfinite(spec.tau) and -1 < spec.tau < 1
                and math.isfinite(spec.slope) and spec.slope > 0
                and 0 < spec.threshold < 1 and 8 <= spec.max_tokens <= 512):
            raise ModelLoadError(f"{bundle.directory}: precedent settings out of range")
        return spec


@dataclass(frozen=True)
class Match:
    """The text of a request that came closest to harmful precedents."""

    text_index: int
    """Which of the texts given to :meth:`Precedents.best` this is."""
    score: float
    """Mean cosine of the k nearest harmful index texts minus that of the k nearest benign."""
    risk: float
    """``score`` on the judge's probability scale: ``>= threshold`` exactly when
    ``score >= tau``, for the threshold the index was calibrated at."""
    category: str
    """The category most of the k nearest harmful texts carry (``none`` if none carries one)."""


def nearest_mean(sims: np.ndarray, k: int) -> np.ndarray:
    """The mean of the ``k`` largest similarities along the last axis: one side of the
    precedent score (the exporter calibrates ``tau`` with this same function)."""
    top: np.ndarray = -np.partition(-sims, k - 1, axis=-1)[..., :k]
    means: np.ndarray = top.mean(-1)
    return means


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    """``v`` scaled to unit length; a zero or non-finite vector is a broken model's output,
    never a neutral score: it raises (fail closed)."""
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm == 0.0:
        raise GuardError(f"{what} returned a zero or non-finite vector")
    unit: np.ndarray = v / norm
    return unit


class SentenceEncoder:
    """all-MiniLM-L6-v2 as ONNX: a text's unit-length mean-pooled embedding."""

    def __init__(self, model: bytes | Path, tokenizer_json: str, max_tokens: int,
                 providers: Sequence[ProviderSpec], threads: int | None = None,
                 name: str = "precedent encoder") -> None:
        try:
            self.tokenizer = Tokenizer.from_str(tokenizer_json)
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ModelLoadError(f"{name}: the tokenizer does not load: {exc}") from exc
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.session = make_session(model, providers, threads, name=name)
        self._inputs = {i.name for i in self.session.get_inputs()}

    def embed(self, text: str) -> np.ndarray:
        """The text's unit-length sentence embedding (mean of the last hidden states).

        One text per call: the encoder's INT8 activations are scaled per call, so a text
        batched beside another would not get the embedding the index was built with.
        """
        enc = self.tokenizer.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        mask = np.asarray([enc.attention_mask], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask,
                 "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        hidden = check_output("precedent encoder", hidden, (1, ids.shape[1], None))
        check_not_constant("precedent encoder", hidden[0])
        return _unit(hidden[0].astype(np.float32).mean(axis=0), "precedent encoder")


class Precedents:
    """The sentence encoder and the index of labelled texts; built once, called per request."""

    def __init__(self, directory: Path, providers: Sequence[ProviderSpec],
                 threads: int | None = None, judge_threshold: float | None = None) -> None:
        """``judge_threshold``: the default threshold of the judge this check stands beside,
        which ``tau`` maps onto (:meth:`risk`); None keeps the one the index was exported
        with. ``tau`` is calibrated on precedent scores alone, so it must stay the margin
        whatever judge is bundled: mapped onto a stale threshold it silently moves (stop 33:
        a judge at 0.2 beside an index mapped onto 0.5298 flagged from ``tau`` - 0.07)."""
        self.record = record = Bundle.load(directory)
        spec = PrecedentSpec.from_bundle(record)
        if judge_threshold is not None:
            if not (isinstance(judge_threshold, float) and 0 < judge_threshold < 1):
                raise ModelLoadError(f"judge_threshold must be in (0, 1), got {judge_threshold!r}")
            spec = replace(spec, threshold=judge_threshold)
        self.spec = spec
        self.encoder = SentenceEncoder(record.read(spec.encoder), record.read_text(spec.tokenizer),
                                       spec.max_tokens, providers, threads,
                                       name=f"precedent/{spec.encoder}")
        index = load_index(record.read(spec.index), directory)
        if min(len(index.harmful), len(index.benign)) < spec.k:
            raise ModelLoadError(f"{directory}: the precedent index holds fewer than k texts")
        self.harmful, self.benign, self.categories = index.harmful, index.benign, index.categories
        self.mean, self.projection = index.mean, index.projection

    @property
    def providers(self) -> list[str]:
        return list(self.encoder.session.get_providers())

    def project(self, v: np.ndarray) -> np.ndarray:
        """An encoder embedding in the index's space (itself when the index is not reduced)."""
        if self.projection is None or self.mean is None:
            return v
        return _unit((v - self.mean) @ self.projection, "precedent projection")

    def score(self, v: np.ndarray) -> tuple[float, str]:
        """An embedding (in the index's space) and its precedent score and the category of its
        nearest harmful texts."""
        k = self.spec.k
        sim_h = self.harmful @ v
        top_h = np.argpartition(-sim_h, k - 1)[:k]
        score = float(sim_h[top_h].mean() - nearest_mean(self.benign @ v, k))
        votes = np.bincount(self.categories[top_h], minlength=len(CATEGORIES))
        votes[0] = 0  # index texts without a category do not vote
        category = CATEGORIES[int(votes.argmax())] if votes.any() else "none"
        return score, category

    def risk(self, score: float) -> float:
        """``score`` on the judge's scale: logistic around ``tau``, centred on the threshold."""
        s = self.spec
        z = math.log(s.threshold / (1 - s.threshold)) + s.slope * (score - s.tau)
        return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))

    def best(self, texts: Sequence[str]) -> Match | None:
        """The text (of at most :data:`MAX_TEXTS`) nearest harmful precedents; None if none."""
        best: Match | None = None
        for i, text in enumerate(texts[:MAX_TEXTS]):
            if not text.strip():
                continue
            score, category = self.score(self.project(self.encoder.embed(text)))
            if best is None or score > best.score:
                best = Match(i, score, self.risk(score), category)
        return best


@dataclass(frozen=True)
class Index:
    """Unit-length embeddings of the harmful and benign texts, each harmful text's category,
    and (optionally) the projection the embeddings were reduced by: a query is centred by
    ``mean``, multiplied by ``projection`` and normalised again before it is compared."""

    harmful: np.ndarray
    benign: np.ndarray
    categories: np.ndarray
    mean: np.ndarray | None = None
    projection: np.ndarray | None = None


def load_index(data: bytes, directory: Path) -> Index:
    """The index from its ``.npz`` bytes, checked: a malformed one is a load error."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            harmful = np.asarray(z["harmful"], dtype=np.float32)
            benign = np.asarray(z["benign"], dtype=np.float32)
            categories = np.asarray(z["categories"], dtype=np.int64)
            mean = np.asarray(z["mean"], dtype=np.float32) if "mean" in z else None
            proj = np.asarray(z["projection"], dtype=np.float32) if "projection" in z else None
    except Exception as exc:  # a corrupt npz raises several unrelated types
        raise ModelLoadError(f"{directory}: cannot read the precedent index: {exc!r}") from exc
    ok = (harmful.ndim == 2 and benign.ndim == 2 and harmful.shape[1] == benign.shape[1]
          and categories.shape == (len(harmful),)
          and bool(np.isfinite(harmful).all() and np.isfinite(benign).all())
          and categories.min(initial=0) >= 0 and categories.max(initial=0) < len(CATEGORIES))
    if (mean is None) != (proj is None):
        ok = False
    elif mean is not None and proj is not None:
        ok = ok and (mean.ndim == 1 and proj.shape == (len(mean), harmful.shape[1])
                     and bool(np.isfinite(mean).all() and np.isfinite(proj).all()))
    if not ok:
        raise ModelLoadError(f"{directory}: the precedent index is malformed")
    return Index(harmful, benign, categories, mean, proj)
