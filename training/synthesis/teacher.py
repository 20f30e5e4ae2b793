"""The one interface every teacher implements, so the pipeline can swap them freely.

Two teachers annotate :class:`SeedItem` s into :class:`Example` s through the three reasoning
stages (threat, intent, guidance): the offline synthesiser (the default, needs no network) and
:class:`~training.synthesis.vlm_teacher.VLMTeacher` (any OpenAI-compatible endpoint). Code that
builds data sets depends only on :class:`Teacher`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tqdm import tqdm

from training.synthesis.schema import Example, SeedItem


class TeacherError(RuntimeError):
    """A teacher could not produce a valid example for an item (after any retries)."""


@runtime_checkable
class Teacher(Protocol):
    """Turns seed items into fully annotated, validated examples."""

    def annotate(self, item: SeedItem) -> Example:
        """Annotate one item; raise :class:`TeacherError` when that is impossible."""
        ...

    def annotate_many(self, items: Sequence[SeedItem], progress: bool = True) -> list[Example]:
        """Annotate many items; the result is in input order."""
        ...


class BaseTeacher(ABC):
    """Gives subclasses a sequential ``annotate_many``; they only write ``annotate``."""

    #: Short label shown on the progress bar.
    name: str = "teacher"

    @abstractmethod
    def annotate(self, item: SeedItem) -> Example:
        """Annotate one item; raise :class:`TeacherError` when that is impossible."""

    def annotate_many(self, items: Sequence[SeedItem], progress: bool = True) -> list[Example]:
        """Annotate items one after the other, in input order, with a progress bar."""
        return [
            self.annotate(item)
            for item in tqdm(items, desc=self.name, unit="ex", disable=not progress)
        ]


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
