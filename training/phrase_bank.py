"""PhraseBank: the recent distinct phrases of each source, used as cross-batch text negatives.

A batch holds a few dozen object phrases, so the alignment loss rarely sees the phrase that is hardest
to tell apart from an object's own ("a small cyan square" for a blue square). The bank remembers the
last ``capacity`` distinct phrases of each source; the alignment loss scores every object against its
own source's bank as well as the batch's phrases (object-to-text direction only).

Phrases are kept as strings and re-encoded every step, so their embeddings are never stale: with a
frozen text encoder (the tiny preset) that costs only the projection of cached pooled features; with
a trained encoder it is a text forward pass over the bank, so keep the capacity small there.
Negatives come from the object's own source because another source's phrases are text of another kind
that may well describe the object (a referring expression's object has a caption in the caption
source).
"""

from __future__ import annotations

from collections import OrderedDict


class PhraseBank:
    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"the phrase bank capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._recent: dict[str, OrderedDict[str, None]] = {}

    def add(self, source: str, phrases: list[str]) -> None:
        """Remember ``phrases`` as the newest of ``source``; the oldest beyond ``capacity`` are forgotten."""
        if self.capacity == 0:
            return
        recent = self._recent.setdefault(source, OrderedDict())
        for phrase in phrases:
            recent[phrase] = None
            recent.move_to_end(phrase)
        while len(recent) > self.capacity:
            recent.popitem(last=False)

    def negatives(self, source: str, exclude: set[str]) -> list[str]:
        """The remembered phrases of ``source`` not in ``exclude`` (the batch's own phrases), oldest first."""
        return [p for p in self._recent.get(source, ()) if p not in exclude]

    def state_dict(self) -> dict[str, list[str]]:
        """source -> its remembered phrases, oldest first (saved with the resumable training state)."""
        return {source: list(recent) for source, recent in self._recent.items()}

    def load_state_dict(self, state: dict[str, list[str]]) -> None:
        self._recent = {}
        for source, phrases in state.items():
            self.add(source, list(phrases))

    def __len__(self) -> int:
        return sum(len(recent) for recent in self._recent.values())
