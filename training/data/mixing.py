"""Mixed-source batches: every batch element's source is drawn by the configured proportions.

Mixed batches (rather than one source per batch) give the contrastive losses cross-source in-batch
negatives. Use with a DataLoader::

    dataset = MixedDataset({"coco": coco, "cc3m": cc3m})
    sampler = MixedBatchSampler(dataset.source_sizes, {"coco": 0.7, "cc3m": 0.3}, batch_size=32,
                                num_batches=1000, seed=0, rank=rank, world_size=world_size)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in loader: ...

How the stream is built (all of it a pure function of ``(seed, rank, world_size, epoch)``):

* **Sources.** Epoch ``e`` holds ``num_batches * batch_size`` elements. Their per-source counts are a
  multinomial draw and their order a uniform shuffle of that multiset, both from a generator seeded
  by ``(seed, rank, e)``. Together this is exactly an i.i.d. draw of each element's source by the
  proportions; drawing the counts first makes every epoch's counts O(1) to recompute.
* **Indices.** Each source is an endless stream of cycles; cycle ``c`` is a permutation of the source
  seeded by ``(seed, source, c)``, the same on every rank. Like ``DistributedSampler``, it is padded by
  wrapping to a multiple of ``world_size`` and rank ``r`` takes positions ``r, r + world_size, ...``,
  so within a cycle the ranks' indices are **disjoint**. Every index of a rank's shard is visited once
  before any repeats; a small source simply cycles (a new permutation each cycle).
* **Repeat factors** (optional, per source): cycle ``c`` then holds image ``i`` floor(r_i) times plus
  once more with probability frac(r_i), drawn from the cycle's generator (detectron2's
  ``RepeatFactorTrainingSampler`` does the same per epoch). The cycle is wrapped or cut to the fixed
  length round(sum r), so stream positions stay O(1) to compute. Positions are still split disjointly
  across ranks, but an image's copies may land on different ranks. See ``repeat_factors.py``.
* **Epochs continue the streams.** Epoch ``e`` starts each source where epoch ``e - 1`` stopped (the
  offset is the sum of the earlier epochs' counts), so a large source is not re-sampled from the start
  each epoch. ``set_epoch`` may jump to any epoch (resume); the result is the same as getting there
  one epoch at a time.
* **Draws.** Each key carries ``draw``, the element's position in its source's stream counted over all
  ranks (``position * world_size + rank``): unique to that access within a run, whatever the epoch
  or rank. :class:`MixedDataset` hands it to a dataset with per-access random choices (which phrase
  or caption of an object to use), so an image seen ten times draws afresh each time, reproducibly.
* ``num_batches`` is per rank: under DDP every rank must take the same number of steps.

Source names are sorted before use, so a mapping's key order never changes the stream.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch.utils.data

log = logging.getLogger(__name__)

# Stream tags keep the generators for different purposes independent for the same seed.
_TAG_SOURCES = 0
_TAG_PERMUTATION = 1


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(x) for x in entropy]))


def _source_key(name: str) -> int:
    """A stable integer per source name (not Python's salted ``hash``)."""
    return zlib.crc32(name.encode("utf-8"))


def normalise_proportions(source_sizes: Mapping[str, int], proportions: Mapping[str, float]) -> dict[str, float]:
    """Check a mix against the available sources and scale it to sum to 1.

    Raises ValueError for a proportion that is not a finite number > 0, a source in ``proportions``
    that is not in ``source_sizes`` (or the reverse: a loaded source that would never be sampled),
    and a source with no samples.
    """
    if not proportions:
        raise ValueError("the data mix is empty: give at least one source and its proportion")
    unknown = sorted(set(proportions) - set(source_sizes))
    if unknown:
        raise ValueError(f"data mix names unknown sources {unknown}; available: {sorted(source_sizes)}")
    unused = sorted(set(source_sizes) - set(proportions))
    if unused:
        raise ValueError(f"sources {unused} have no proportion in the data mix; give one or drop the source")
    values = {}
    for name, value in proportions.items():
        try:
            values[name] = float(value)
        except (TypeError, ValueError):
            values[name] = math.nan
        if not (math.isfinite(values[name]) and values[name] > 0):
            raise ValueError(f"proportion for source {name!r} must be a finite number > 0, got {value!r}")
    for name, size in source_sizes.items():
        if int(size) <= 0:
            raise ValueError(f"source {name!r} is empty (size {size})")
    total = sum(values.values())
    return {name: values[name] / total for name in sorted(values)}


class MixedBatchSampler:
    """Batches of ``(source, index, draw)`` keys for :class:`MixedDataset` (a DataLoader ``batch_sampler``);
    ``draw`` numbers the access (see the module docstring).

    source_sizes: ``{source: number of samples}``.
    proportions:  ``{source: weight > 0}``, normalised to sum to 1 (e.g. ``TrainConfig.data_mix``).
    batch_size:   elements per batch on this rank.
    num_batches:  batches per epoch on this rank (the same on every rank).
    seed:         base seed; the stream is a pure function of ``(seed, rank, world_size, epoch)``.
    rank, world_size: this process's DDP rank and the number of ranks.
    repeat_factors: ``{source: (size,) factors >= 1}`` for sources sampled by repeat factor (others uniformly).
    """

    def __init__(
        self,
        source_sizes: Mapping[str, int],
        proportions: Mapping[str, float],
        batch_size: int,
        num_batches: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        repeat_factors: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.proportions = normalise_proportions(source_sizes, proportions)
        self.sources = tuple(self.proportions)  # sorted
        self.source_sizes = {name: int(source_sizes[name]) for name in self.sources}
        self.batch_size = int(batch_size)
        self.num_batches = int(num_batches)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self._probs = np.array([self.proportions[s] for s in self.sources])
        self.repeat_factors = _check_repeat_factors(repeat_factors or {}, self.source_sizes)
        cycle_lengths = {s: round(float(self.repeat_factors[s].sum())) if s in self.repeat_factors else n
                         for s, n in self.source_sizes.items()}
        # Per source: this rank's cycle length (its shard of the padded permutation).
        self._shard_sizes = {s: math.ceil(n / self.world_size) for s, n in cycle_lengths.items()}
        self._offset_cache: tuple[int, np.ndarray] = (0, np.zeros(len(self.sources), np.int64))
        log.debug(
            "data mix %s, batch %d x %d batches, rank %d/%d",
            self.proportions,
            batch_size,
            num_batches,
            rank,
            world_size,
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next ``__iter__`` yields (call it before each epoch, as with DDP)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def _epoch_counts(self, epoch: int) -> tuple[np.ndarray, np.random.Generator]:
        rng = _rng(self.seed, _TAG_SOURCES, self.rank, epoch)
        return rng.multinomial(self.num_batches * self.batch_size, self._probs), rng

    def _offsets(self, epoch: int) -> np.ndarray:
        """How many elements of each source this rank consumed in epochs ``0 .. epoch - 1``."""
        start, offsets = self._offset_cache
        if epoch < start:
            start, offsets = 0, np.zeros(len(self.sources), np.int64)
        offsets = offsets.copy()
        for e in range(start, epoch):
            offsets += self._epoch_counts(e)[0]
        self._offset_cache = (epoch, offsets)
        return offsets

    def _shard(self, source: str, cycle: int) -> np.ndarray:
        """This rank's share of the ``cycle``-th permutation of ``source`` (disjoint across ranks)."""
        size = self.source_sizes[source]
        rng = _rng(self.seed, _TAG_PERMUTATION, _source_key(source), cycle)
        factors = self.repeat_factors.get(source)
        if factors is None:
            perm = rng.permutation(size)
        else:
            copies = np.floor(factors).astype(np.int64) + (rng.random(size) < factors % 1)
            perm = rng.permutation(np.repeat(np.arange(size), copies))
        padded = np.resize(perm, self._shard_sizes[source] * self.world_size)  # wraps, like DistributedSampler
        return padded[self.rank :: self.world_size]

    def _indices(self, source: str, start: int, count: int) -> np.ndarray:
        """Positions ``start .. start + count - 1`` of this rank's endless stream for ``source``."""
        if count == 0:
            return np.zeros(0, np.int64)
        shard = self._shard_sizes[source]
        first, last = start // shard, (start + count - 1) // shard
        stream = np.concatenate([self._shard(source, c) for c in range(first, last + 1)])
        begin = start - first * shard
        return stream[begin : begin + count]

    def __iter__(self) -> Iterator[list[tuple[str, int]]]:
        epoch = self.epoch
        offsets = self._offsets(epoch)
        counts, rng = self._epoch_counts(epoch)
        order = rng.permutation(np.repeat(np.arange(len(self.sources)), counts))
        picks = np.empty(len(order), np.int64)
        draws = np.empty(len(order), np.int64)
        for k, source in enumerate(self.sources):
            where = order == k
            picks[where] = self._indices(source, int(offsets[k]), int(counts[k]))
            draws[where] = (offsets[k] + np.arange(counts[k])) * self.world_size + self.rank
        for b in range(self.num_batches):
            batch = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield [(self.sources[k], i, d)
                   for k, i, d in zip(order[batch].tolist(), picks[batch].tolist(), draws[batch].tolist())]


def _check_repeat_factors(factors: Mapping[str, np.ndarray], sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    checked = {}
    for name, values in factors.items():
        if name not in sizes:
            raise ValueError(f"repeat factors given for {name!r}, which is not a source of the mix {sorted(sizes)}")
        values = np.asarray(values, np.float64)
        if values.shape != (sizes[name],) or not (np.isfinite(values).all() and (values >= 1).all()):
            raise ValueError(f"repeat factors of {name!r} must be {sizes[name]} finite numbers >= 1")
        checked[name] = values
    return checked


class MixedDataset(torch.utils.data.Dataset):
    """Several datasets behind one ``__getitem__((source, index[, draw]))``.

    datasets: ``{source: map-style dataset}``; an item is returned unchanged from its dataset
    (a :class:`training.data.sample.Sample` already names its ``source``). With a ``draw`` (from
    :class:`MixedBatchSampler`), a dataset that makes per-access random choices is read as
    ``dataset.sample(index, draw)``; any other as ``dataset[index]``.
    """

    def __init__(self, datasets: Mapping[str, Any]) -> None:
        if not datasets:
            raise ValueError("MixedDataset needs at least one source dataset")
        self.datasets = dict(datasets)

    @property
    def source_sizes(self) -> dict[str, int]:
        """``{source: len(dataset)}``: the first argument of :class:`MixedBatchSampler`."""
        return {name: len(ds) for name, ds in self.datasets.items()}

    def __len__(self) -> int:
        return sum(self.source_sizes.values())

    def __getitem__(self, key: tuple[str, int] | tuple[str, int, int]) -> Any:
        source, index, *draw = key
        try:
            dataset = self.datasets[source]
        except KeyError:
            raise KeyError(f"unknown source {source!r}; sources: {sorted(self.datasets)}") from None
        if draw and callable(getattr(dataset, "sample", None)):
            return dataset.sample(index, draw[0])
        return dataset[index]
