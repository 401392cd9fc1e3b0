"""ATDP: Alternating Training with Decreasing Proportions (paper, sec. III-B, eq. 2).

An epoch is one pass over the target (main) dataset. Auxiliary batches are
interleaved with it at random, their number set by the ratios r_0 : r_1 : ...,
and each auxiliary ratio is multiplied by its decay every epoch:

    r_i(e) = r_i(0) * d_i ** e      (e = 0 for the first epoch, d_0 = 1 for the target)

Batch counts are computed per dataset (rounded), then the order is a seeded
permutation, so every ratio is honoured exactly — the public code compared
against the wrong ratio with two or more auxiliaries. Each dataset draws its
samples from its own endless, seeded stream of permutations; the sampler's
whole state is (epoch, stream cursors), which a checkpoint stores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AtdpSampler", "ratios_at", "batches_per_epoch"]


def ratios_at(ratios: tuple[float, ...], decays: tuple[float, ...], epoch: int) -> np.ndarray:
    """Eq. 2: ratios of epoch `epoch` (0-based). `decays` has one entry per auxiliary."""
    r = np.asarray(ratios, dtype=np.float64)
    d = np.asarray((1.0, *decays), dtype=np.float64)
    if len(d) != len(r):
        raise ValueError(f"atdp: {len(r)} ratios need {len(r) - 1} decays, got {len(decays)}")
    if (r <= 0).any() or (d <= 0).any():
        raise ValueError("atdp: ratios and decays must be positive")
    return r * d**epoch


def batches_per_epoch(num_target_batches: int, ratios: np.ndarray) -> np.ndarray:
    """Batch count per dataset: the target's pass, auxiliaries in proportion (rounded, >= 0)."""
    counts = np.rint(num_target_batches * ratios / ratios[0]).astype(np.int64)
    counts[0] = num_target_batches
    return counts


@dataclass
class _Stream:
    """Endless seeded sequence of permutations of range(size); position = (cycle, offset)."""

    size: int
    seed: int
    cycle: int = 0
    offset: int = 0

    def take(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            perm = np.random.default_rng([self.seed, self.cycle]).permutation(self.size)
            chunk = perm[self.offset:self.offset + n]
            out.append(chunk)
            n -= len(chunk)
            self.offset += len(chunk)
            if self.offset >= self.size:
                self.cycle, self.offset = self.cycle + 1, 0
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class AtdpSampler:
    """Yields (dataset position, sample indices) batches for one epoch at a time.

    `sizes[0]` is the target dataset. With a single dataset this is a plain
    shuffled pass (the baseline). `drop_last` keeps batch shapes constant.
    `passes` > 1 makes an epoch that many passes over the target (the public OCN
    code's `dataset_exp`), so the per-epoch decay acts once per `passes` passes.
    """

    def __init__(self, sizes: list[int], batch_size: int, ratios: tuple[float, ...],
                 decays: tuple[float, ...], seed: int, drop_last: bool = True, passes: int = 1) -> None:
        if passes < 1:
            raise ValueError(f"atdp: passes per epoch must be >= 1, got {passes}")
        if any(s < 1 for s in sizes):
            raise ValueError(f"atdp: every dataset needs at least one sample, got sizes {sizes}")
        self.sizes, self.batch_size = list(sizes), batch_size
        self.ratios, self.decays, self.seed = tuple(ratios), tuple(decays), seed
        self.drop_last, self.passes = drop_last, int(passes)
        ratios_at(self.ratios, self.decays, 0)  # validate now, not mid-training
        self.epoch = 0
        self.streams = [_Stream(size, seed=int(seed) * 1000 + i) for i, size in enumerate(sizes)]

    @property
    def num_target_batches(self) -> int:
        n = self.sizes[0] // self.batch_size if self.drop_last else -(-self.sizes[0] // self.batch_size)
        return max(n, 1) * self.passes

    def counts(self, epoch: int) -> np.ndarray:
        return batches_per_epoch(self.num_target_batches, ratios_at(self.ratios, self.decays, epoch))

    def plan(self) -> list[tuple[int, np.ndarray]]:
        """The current epoch's batches in order; advances the streams and the epoch."""
        counts = self.counts(self.epoch)
        order = np.repeat(np.arange(len(counts)), counts)
        np.random.default_rng([int(self.seed), 7919, self.epoch]).shuffle(order)
        batches = []
        for d in order:
            bs = min(self.batch_size, self.sizes[d]) if self.drop_last else self.batch_size
            batches.append((int(d), self.streams[d].take(bs)))
        self.epoch += 1
        return batches

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "streams": [(s.cycle, s.offset) for s in self.streams]}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        for s, (cycle, offset) in zip(self.streams, state["streams"], strict=True):
            s.cycle, s.offset = int(cycle), int(offset)
