"""A training stream that can be resumed exactly.

detectron2's ``TrainingSampler`` restarts its shuffled stream from the beginning
when a run is resumed, and each data-loader worker draws augmentations from its
own random state, so a resumed run sees other images and other augmentations
than an uninterrupted one. Here every sample is a function of its *position* p
in one infinite stream (0, 1, 2, ...) and of one seed:

- image: permutation ``e = p // n`` of the dataset (seeded by (seed, e)), entry ``p % n``;
- augmentation: the random generators are seeded by (seed, p) for that sample only.

So the stream can be started at any position: a run resumed at iteration k
starts at p = k * SOLVER.IMS_PER_BATCH and continues as if never stopped, with
the same number of processes and loader workers. (With detectron2's aspect-ratio
grouping, which batches images out of stream order, that holds only when all
images share one orientation; the trainer turns grouping off for the centernet
mapper, whose outputs are all square.)

Iteration k is exactly the positions [k * B, (k + 1) * B) with B =
SOLVER.IMS_PER_BATCH, over all processes. Two stream-level augmentations use
that, each with its own generator that the mapper's draws never touch:

- multi-scale training: the square side of iteration k is drawn from a list,
  seeded by (seed, k) only, so every image of the batch on every process has it;
- mixup (:mod:`centerx.data.mixup`): whether sample p is mixed, with which
  second image and how strongly, seeded by (seed, p).
"""

import itertools
import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from detectron2.utils import comm
from torch.utils.data import Dataset, Sampler

from .mixup import Mixup, mix_samples

# streams of draws besides the mapper's: the spawn keys of their generators
SIZE_STREAM = 1
MIXUP_STREAM = 2


def _mix(seed: int, value: int) -> int:
    """A 31-bit seed from two integers (deterministic across processes)."""
    return int(np.random.SeedSequence([seed % 2**32, value]).generate_state(1)[0] >> 1)


def stream_generator(seed: int, stream: int, value: int) -> np.random.Generator:
    """NumPy generator of draw stream ``stream`` (SIZE_STREAM, MIXUP_STREAM) at
    ``value`` (an iteration or a position): seeded by
    ``SeedSequence(seed % 2**32, spawn_key=(stream, value))``, independent of
    the mapper's seeds (plain two-word entropy, no spawn key)."""
    return np.random.default_rng(np.random.SeedSequence(seed % 2**32, spawn_key=(stream, value)))


class ResumableTrainingSampler(Sampler):
    """Infinite stream of positions ``start + rank, start + rank + world, ...``:
    this process's share of the global stream, from ``start`` on.

    ``start`` may be changed until the data loader starts iterating
    (detectron2's trainers start it at the first step, after resuming).
    """

    def __init__(self, start: int = 0):
        self.start = start
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()

    def __iter__(self):
        yield from itertools.count(self.start + self._rank, self._world_size)


class PositionedDataset(Dataset):
    """Mapped samples indexed by stream position.

    ``dataset[p]`` is ``mapper(dicts[perm_e[p % n]])`` with ``perm_e`` the
    permutation of epoch ``e = p // n`` (identity when ``shuffle`` is False),
    computed with Python's, NumPy's and torch's (CPU) global generators seeded
    by (``seed``, p) and restored afterwards: a sample depends on nothing but
    its position. When the mapper returns None (an image it skips), the next
    dataset entries are tried in turn, with the same seeding.
    ``seed`` may be changed until the data loader starts iterating.

    Optional stream-level augmentations (iteration k = p // ``batch_size``,
    ``batch_size`` the total batch over all processes):

    - ``train_sizes``: the mapper is called as ``mapper(d, size=s)`` with s =
      ``train_sizes[i]``, i = ``stream_generator(seed, SIZE_STREAM, k).integers(len(train_sizes))``;
      empty = ``mapper(d)``.
    - ``mixup``: while ``mixup.active_at(k)``, a generator
      ``stream_generator(seed, MIXUP_STREAM, p)`` draws, in this order:
      u = random() (mixed iff u < ``mixup.prob``); j = integers(n - 1), the
      second entry being (first entry + 1 + j) % n (the first entry itself when
      n = 1); lam = beta(alpha, alpha); the 31-bit seed the second entry is
      mapped with = integers(2**31). The two mapped samples (same size) are
      blended by :func:`~centerx.data.mixup.mix_samples`. Outside the active
      iterations, or with ``mixup`` None, nothing is drawn.
    """

    def __init__(
        self,
        dicts: list[dict],
        mapper: Callable,
        seed: int,
        shuffle: bool = True,
        batch_size: int = 1,
        train_sizes: Sequence[int] = (),
        mixup: Mixup | None = None,
    ):
        if len(dicts) == 0:
            raise ValueError("The training dataset is empty: check DATASETS.TRAIN and the filters applied to it.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.dicts = dicts
        self.mapper = mapper
        self.seed = seed
        self.shuffle = shuffle
        self.batch_size = batch_size
        self.train_sizes = tuple(int(s) for s in train_sizes)
        self.mixup = mixup
        self._perm_epoch = None
        self._perm = None

    def __len__(self):
        return len(self.dicts)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch))
            self._perm = torch.randperm(len(self.dicts), generator=g)
            self._perm_epoch = epoch
        return self._perm

    def train_size(self, position: int) -> int | None:
        """Square training side of the iteration of ``position`` (None without ``train_sizes``)."""
        if not self.train_sizes:
            return None
        g = stream_generator(self.seed, SIZE_STREAM, int(position) // self.batch_size)
        return self.train_sizes[int(g.integers(len(self.train_sizes)))]

    def __getitem__(self, position: int):
        position = int(position)
        epoch, i = divmod(position, len(self.dicts))
        index = int(self._permutation(epoch)[i]) if self.shuffle else i
        size = self.train_size(position)
        data = self._map_readable(index, _mix(self.seed, position + 1), size)
        if self.mixup is not None and self.mixup.active_at(position // self.batch_size):
            data = self._maybe_mix(data, index, position, size)
        return data

    def _maybe_mix(self, data: dict, index: int, position: int, size: int | None) -> dict:
        g = stream_generator(self.seed, MIXUP_STREAM, position)
        if g.random() >= self.mixup.prob:
            return data
        n = len(self.dicts)
        partner = (index + 1 + int(g.integers(n - 1))) % n if n > 1 else index
        lam = float(g.beta(self.mixup.alpha, self.mixup.alpha))
        other = self._map_readable(partner, int(g.integers(2**31)), size)
        return mix_samples(data, other, lam)

    def _map_readable(self, index: int, seed: int, size: int | None):
        """The first entry from ``index`` on that the mapper does not skip."""
        for attempt in range(len(self.dicts)):
            data = self._map((index + attempt) % len(self.dicts), seed, size)
            if data is not None:
                return data
        raise RuntimeError("The mapper skipped every image of the training dataset; see the warnings above.")

    def _map(self, index: int, seed: int, size: int | None):
        py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        try:
            return self.mapper(self.dicts[index]) if size is None else self.mapper(self.dicts[index], size=size)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            torch.set_rng_state(torch_state)
