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
"""
import itertools
import random
from typing import Callable, Dict, List

import numpy as np
import torch
from detectron2.utils import comm
from torch.utils.data import Dataset, Sampler


def _mix(seed: int, value: int) -> int:
    """A 31-bit seed from two integers (deterministic across processes)."""
    return int(np.random.SeedSequence([seed % 2 ** 32, value]).generate_state(1)[0] >> 1)


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
    """

    def __init__(self, dicts: List[Dict], mapper: Callable, seed: int, shuffle: bool = True):
        if len(dicts) == 0:
            raise ValueError("The training dataset is empty: check DATASETS.TRAIN and the filters applied to it.")
        self.dicts = dicts
        self.mapper = mapper
        self.seed = seed
        self.shuffle = shuffle
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

    def __getitem__(self, position: int):
        epoch, i = divmod(int(position), len(self.dicts))
        index = int(self._permutation(epoch)[i]) if self.shuffle else i
        seed = _mix(self.seed, int(position) + 1)
        for attempt in range(len(self.dicts)):
            data = self._map((index + attempt) % len(self.dicts), seed)
            if data is not None:
                return data
        raise RuntimeError("The mapper skipped every image of the training dataset; see the warnings above.")

    def _map(self, index: int, seed: int):
        py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        try:
            return self.mapper(self.dicts[index])
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            torch.set_rng_state(torch_state)
