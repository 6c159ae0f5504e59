"""Mixed-source batch sampling: proportions, coverage, determinism, DDP ranks, DataLoader use."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from training.data.mixing import MixedBatchSampler, MixedDataset
from training.data.repeat_factors import category_repeat_factors, image_repeat_factors

SIZES = {"coco": 500, "cc3m": 2000, "tiny": 7}
MIX = {"coco": 7.0, "cc3m": 2.0, "tiny": 1.0}  # not normalised on purpose


def epoch_batches(sampler: MixedBatchSampler, epoch: int) -> list[list[tuple[str, int, int]]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def stream(sampler: MixedBatchSampler, source: str, epochs: range) -> list[int]:
    """The indices drawn from ``source`` in order, over several epochs."""
    return [i for e in epochs for batch in epoch_batches(sampler, e) for s, i, _ in batch if s == source]


def test_batches_have_the_configured_shape_and_valid_indices():
    sampler = MixedBatchSampler(SIZES, MIX, batch_size=16, num_batches=30)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 30
    assert all(len(b) == 16 for b in batches)
    for batch in batches:
        for source, index, draw in batch:
            assert isinstance(index, int) and 0 <= index < SIZES[source]
            assert isinstance(draw, int)
    # Batches are mixed: most batches hold more than one source.
    assert sum(len({s for s, *_ in b}) > 1 for b in batches) > 25


def test_empirical_proportions_match_the_mix():
    sampler = MixedBatchSampler(SIZES, MIX, batch_size=32, num_batches=200, seed=3)
    counts = Counter(s for batch in sampler for s, *_ in batch)
    names = sorted(MIX)
    observed = np.array([counts[n] for n in names])
    total = observed.sum()
    expected = np.array([MIX[n] for n in names]) / sum(MIX.values()) * total
    assert chisquare(observed, expected).pvalue > 1e-3
    # The test has power: the same counts are far from a uniform mix.
    assert chisquare(observed, np.full(3, total / 3)).pvalue < 1e-3


def test_a_small_source_is_fully_visited_before_any_repeat_across_epochs():
    sampler = MixedBatchSampler(SIZES, MIX, batch_size=8, num_batches=40)
    drawn = stream(sampler, "tiny", range(3))
    assert len(drawn) > 4 * SIZES["tiny"]
    cycles = [drawn[k : k + 7] for k in range(0, len(drawn) - 6, 7)]
    assert all(sorted(c) == list(range(7)) for c in cycles)
    assert len({tuple(c) for c in cycles}) > 1  # reshuffled each cycle


def test_a_large_source_does_not_repeat_across_epochs():
    sampler = MixedBatchSampler(SIZES, MIX, batch_size=8, num_batches=40)
    drawn = stream(sampler, "coco", range(2))
    assert 300 < len(drawn) < SIZES["coco"]  # two epochs stay within the first permutation
    assert len(set(drawn)) == len(drawn)


def test_same_seed_and_epoch_give_the_same_batches():
    a = MixedBatchSampler(SIZES, MIX, batch_size=8, num_batches=20, seed=5)
    b = MixedBatchSampler(
        dict(reversed(SIZES.items())), dict(reversed(MIX.items())), batch_size=8, num_batches=20, seed=5
    )
    assert epoch_batches(a, 0) == epoch_batches(b, 0)  # dict order does not matter
    assert epoch_batches(a, 0) == epoch_batches(a, 0)  # re-iterating repeats the epoch
    assert epoch_batches(a, 1) != epoch_batches(a, 0)
    other_seed = MixedBatchSampler(SIZES, MIX, batch_size=8, num_batches=20, seed=6)
    assert epoch_batches(other_seed, 0) != epoch_batches(a, 0)


def test_jumping_to_an_epoch_matches_walking_there():
    walked = MixedBatchSampler(SIZES, MIX, batch_size=8, num_batches=20, seed=1)
    for epoch in range(4):
        epoch_batches(walked, epoch)
    resumed = MixedBatchSampler(SIZES, MIX, batch_size=8, num_batches=20, seed=1)
    assert epoch_batches(resumed, 4) == epoch_batches(walked, 4)
    assert epoch_batches(resumed, 2) == epoch_batches(walked, 2)  # going back works too


def test_ranks_get_different_batches_and_disjoint_indices():
    ranks = [MixedBatchSampler(SIZES, MIX, batch_size=8, num_batches=20, rank=r, world_size=2) for r in range(2)]
    assert list(ranks[0]) != list(ranks[1])
    coco = [set(stream(r, "coco", range(1))) for r in ranks]
    assert all(0 < len(c) < SIZES["coco"] // 2 for c in coco)  # still inside the first cycle
    assert not coco[0] & coco[1]
    # A tiny source (7 items) is split too: the first cycle is 4 items per rank, the two shards
    # covering the source and sharing only the one item that pads 7 to 8.
    first_cycle = [set(stream(r, "tiny", range(1))[:4]) for r in ranks]
    assert first_cycle[0] | first_cycle[1] == set(range(7))
    assert len(first_cycle[0] & first_cycle[1]) == 1


def draws(samplers: list[MixedBatchSampler], epochs: range) -> dict[str, list[int]]:
    """Per source, the draw numbers of every key the samplers yield over ``epochs``."""
    found: dict[str, list[int]] = {}
    for sampler in samplers:
        for e in epochs:
            for source, _, draw in (key for batch in epoch_batches(sampler, e) for key in batch):
                found.setdefault(source, []).append(draw)
    return found


def test_draws_number_every_access_once_across_epochs_and_ranks():
    ranks = [MixedBatchSampler(SIZES, MIX, batch_size=8, num_batches=20, seed=4, rank=r, world_size=2) for r in range(2)]
    for rank, sampler in enumerate(ranks):
        for source, numbers in draws([sampler], range(3)).items():
            # Rank r's accesses to a source are its stream positions 0, 1, 2, ... as r, r + 2, r + 4, ...
            assert sorted(numbers) == list(range(rank, 2 * len(numbers), 2)), (rank, source)
    found = draws(ranks, range(3))
    for source, numbers in found.items():
        assert len(set(numbers)) == len(numbers), source  # no access shares a draw, across ranks too
    # The tiny source (7 items) cycles about 20 times: its images come back, each time with a new draw.
    assert len(found["tiny"]) > 10 * SIZES["tiny"]
    # Jumping to an epoch (resume) gives the draws of walking there.
    resumed = MixedBatchSampler(SIZES, MIX, batch_size=8, num_batches=20, seed=4, rank=1, world_size=2)
    assert epoch_batches(resumed, 2) == epoch_batches(ranks[1], 2)


class DrawRecorder(torch.utils.data.Dataset):
    """``sample(index, draw)`` reports both; ``dataset[index]`` reports no draw."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> tuple:
        return (index, None)

    def sample(self, index: int, draw: int) -> tuple:
        return (index, draw)


def test_mixed_dataset_hands_the_draw_to_datasets_that_take_one():
    dataset = MixedDataset({"drawn": DrawRecorder(), "plain": Items("plain", 4)})
    assert dataset[("drawn", 2, 17)] == (2, 17)
    assert dataset[("drawn", 2)] == (2, None)  # no draw in the key: plain indexing
    assert dataset[("plain", 1, 17)] == {"source": "plain", "value": 1}  # a dataset without sample()


def test_bad_mixes_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="unknown sources"):
        MixedBatchSampler(SIZES, {**MIX, "lvis": 1.0}, batch_size=4, num_batches=1)
    with pytest.raises(ValueError, match="no proportion"):
        MixedBatchSampler(SIZES, {"coco": 1.0}, batch_size=4, num_batches=1)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="'tiny'.*> 0"):
            MixedBatchSampler(SIZES, {**MIX, "tiny": bad}, batch_size=4, num_batches=1)
    with pytest.raises(ValueError, match="'tiny' is empty"):
        MixedBatchSampler({**SIZES, "tiny": 0}, MIX, batch_size=4, num_batches=1)
    with pytest.raises(ValueError, match="empty"):
        MixedBatchSampler(SIZES, {}, batch_size=4, num_batches=1)
    with pytest.raises(ValueError, match="rank"):
        MixedBatchSampler(SIZES, MIX, batch_size=4, num_batches=1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        MixedBatchSampler(SIZES, MIX, batch_size=0, num_batches=1)


class Items(torch.utils.data.Dataset):
    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(index)
        return {"source": self.name, "value": index}


def collate(items: list[dict]) -> dict:
    return {"source": [it["source"] for it in items], "value": torch.tensor([it["value"] for it in items])}


def test_works_as_a_dataloader_batch_sampler():
    dataset = MixedDataset({name: Items(name, size) for name, size in SIZES.items()})
    assert dataset.source_sizes == SIZES
    sampler = MixedBatchSampler(dataset.source_sizes, MIX, batch_size=6, num_batches=5, seed=2)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    loaded = list(loader)
    assert len(loaded) == 5
    for batch, keys in zip(loaded, sampler):
        assert batch["source"] == [s for s, *_ in keys]
        assert batch["value"].tolist() == [i for _, i, _ in keys]
    with pytest.raises(KeyError, match="unknown source 'lvis'"):
        dataset[("lvis", 0)]


def test_repeat_factors_follow_the_lvis_rule():
    # 100 images: category 0 in all, category 1 in one image (f = 0.01), category 2 in 25 (f = 0.25).
    images = [np.array([0]) for _ in range(100)]
    images[0] = np.array([0, 1, 1])  # a repeated category counts once for its image
    for i in range(1, 26):
        images[i] = np.array([0, 2])
    images[99] = np.array([], np.int64)  # no objects
    per_category = category_repeat_factors(images[:99] + [np.array([0])], 3, threshold=0.04)
    np.testing.assert_allclose(per_category, [1.0, 2.0, 1.0])  # sqrt(0.04 / 0.01) = 2; f >= t gives 1
    per_image = image_repeat_factors(images, 3, threshold=0.04)
    assert per_image[0] == pytest.approx(2.0)  # the image's rarest category decides
    assert per_image[1] == per_image[99] == 1.0
    assert image_repeat_factors(images, 3, threshold=0.25)[1] == pytest.approx(1.0)
    assert image_repeat_factors(images, 3, threshold=1.0)[1] == pytest.approx(2.0)  # sqrt(1 / 0.25)
    with pytest.raises(ValueError, match="threshold"):
        image_repeat_factors(images, 3, threshold=0.0)


def test_repeat_factor_sampling_draws_images_in_proportion_to_their_factors():
    factors = np.ones(60)
    factors[:10], factors[10:20] = 3.0, 1.5
    sampler = MixedBatchSampler({"coco": 60, "tiny": 7}, {"coco": 9.0, "tiny": 1.0}, batch_size=16, num_batches=50,
                                seed=2, repeat_factors={"coco": factors})
    drawn = stream(sampler, "coco", range(12))
    counts = np.bincount(drawn, minlength=60)
    per_draw = len(drawn) / factors.sum()
    assert counts[:10].mean() / per_draw == pytest.approx(3.0, rel=0.1)
    assert counts[10:20].mean() / per_draw == pytest.approx(1.5, rel=0.1)
    assert counts[20:].mean() / per_draw == pytest.approx(1.0, rel=0.1)
    # Within one cycle (length round(sum r) = 85) every image is drawn at least floor(r) times.
    first_cycle = np.bincount(drawn[:85], minlength=60)
    assert (first_cycle >= np.floor(factors)).all()
    # The other source is untouched: still every item once per cycle.
    tiny = stream(sampler, "tiny", range(2))
    assert sorted(tiny[:7]) == list(range(7))
    # Deterministic, and each DDP rank gets its own shard of the expanded cycle.
    again = MixedBatchSampler({"coco": 60, "tiny": 7}, {"coco": 9.0, "tiny": 1.0}, batch_size=16, num_batches=50,
                              seed=2, repeat_factors={"coco": factors})
    assert epoch_batches(again, 3) == epoch_batches(sampler, 3)
    ranks = [MixedBatchSampler({"coco": 60}, {"coco": 1.0}, batch_size=5, num_batches=10, rank=r, world_size=2,
                               repeat_factors={"coco": factors}) for r in range(2)]
    halves = [stream(r, "coco", range(1))[:43] for r in ranks]  # ceil(85 / 2) per rank
    assert set(halves[0]) | set(halves[1]) == set(range(60))
    assert halves[0] != halves[1]


def test_bad_repeat_factors_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="not a source"):
        MixedBatchSampler(SIZES, MIX, batch_size=4, num_batches=2, repeat_factors={"lvis": np.ones(3)})
    with pytest.raises(ValueError, match="500 finite numbers >= 1"):
        MixedBatchSampler(SIZES, MIX, batch_size=4, num_batches=2, repeat_factors={"coco": np.ones(499)})
    with pytest.raises(ValueError, match=">= 1"):
        MixedBatchSampler(SIZES, MIX, batch_size=4, num_batches=2, repeat_factors={"coco": np.full(500, 0.5)})
