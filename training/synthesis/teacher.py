"""The one interface a teacher implements: unlabelled :class:`SeedItem` s in, annotated
:class:`Example` s out, through the three reasoning stages (threat, intent, guidance).

:class:`~training.synthesis.vlm_teacher.VLMTeacher` (any OpenAI-compatible endpoint) is the
teacher. The offline synthesiser (``training.synthesis.offline``, the default) is deliberately
*not* one: it never judges an unlabelled item; its labels are those of the corpora its seeds
come from (a red-team prompt is harmful because the corpus says so) and its stage texts are
written from those labels. So it generates (input, label) pairs rather than annotating inputs,
and an ``annotate(item)`` on it would have no label to return. The two meet in its command line:
``--teacher vlm --endpoint URL`` sends the inputs it synthesised to a :class:`Teacher`
(:func:`training.synthesis.offline.annotate_with`), which labels them instead of the corpora,
and writes the same JSON lines. That code depends only on :class:`Teacher`.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from tqdm import tqdm

from training.synthesis.schema import Example, SeedItem

log = logging.getLogger(__name__)


class TeacherError(RuntimeError):
    """A teacher could not produce a valid example for an item (after any retries)."""


@runtime_checkable
class Teacher(Protocol):
    """Turns seed items into fully annotated, validated examples."""

    def annotate(self, item: SeedItem) -> Example:
        """Annotate one item; raise :class:`TeacherError` when that is impossible."""
        ...

    def annotate_many(self, items: Sequence[SeedItem], progress: bool = True,
                      on_error: Literal["raise", "skip"] = "raise") -> list[Example]:
        """Annotate many items; the result is in input order. ``on_error="skip"`` leaves out
        the items that raised :class:`TeacherError` instead of stopping at the first."""
        ...


class BaseTeacher(ABC):
    """Gives subclasses a sequential ``annotate_many``; they only write ``annotate``."""

    #: Short label shown on the progress bar.
    name: str = "teacher"

    @abstractmethod
    def annotate(self, item: SeedItem) -> Example:
        """Annotate one item; raise :class:`TeacherError` when that is impossible."""

    def annotate_many(self, items: Sequence[SeedItem], progress: bool = True,
                      on_error: Literal["raise", "skip"] = "raise") -> list[Example]:
        """Annotate items one after the other, in input order, with a progress bar."""
        out: list[Example] = []
        for item in tqdm(items, desc=self.name, unit="ex", disable=not progress):
            try:
                out.append(self.annotate(item))
            except TeacherError as e:
                if on_error != "skip":
                    raise
                log.warning("skipping item %s: %s", item.seed_id, e)
        return out


def example_id(seed_id: str, *parts: object) -> str:
    """A stable id: the seed id (for humans and split checks) plus a hash of what varies.

    Several examples can come from one seed (renderings, paraphrases, teachers), so the seed
    id alone is not unique; the hash of ``parts`` tells them apart and is reproducible.
    """
    h = hashlib.sha256()
    for part in (seed_id, *parts):
        h.update(repr(part).encode("utf-8"))
        h.update(b"\x00")
    return f"{seed_id}-{h.hexdigest()[:12]}"
