"""Check that the processes of a distributed run end with the same weights."""

import hashlib
import logging

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

logger = logging.getLogger(__name__)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-1 of named tensors (names, shapes and bytes, in the dict's order)."""
    h = hashlib.sha1()
    for name, value in tensors.items():
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def replica_digests(model: torch.nn.Module):
    """(digest of the parameters, digest of the buffers) of ``model``."""
    return tensors_digest(dict(model.named_parameters())), tensors_digest(dict(model.named_buffers()))


class ReplicaCheck(HookBase):
    """After training with more than one process: gather each process's digests
    of its parameters and of its buffers and log whether they are equal across
    processes (a warning naming the processes that differ otherwise).

    DistributedDataParallel keeps the parameters equal. Buffers (BatchNorm
    running statistics) stay per process with detectron2's
    ``broadcast_buffers=False`` unless the norm layers are synchronised
    (SyncBN / naiveSyncBN); checkpoints and evaluation use rank 0's.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def after_train(self):
        if comm.get_world_size() == 1:
            return
        gathered = comm.all_gather(replica_digests(self.model))
        for i, part in enumerate(("parameters", "buffers")):
            digests = [g[i] for g in gathered]
            if len(set(digests)) == 1:
                logger.info(
                    f"Model {part} after training are identical on all {len(digests)} processes (sha1 {digests[0]})."
                )
            else:
                listing = ", ".join(f"rank {r}: {d}" for r, d in enumerate(digests))
                hint = (
                    " (per-process BatchNorm statistics: use a SyncBN norm to keep them equal)"
                    if part == "buffers"
                    else ""
                )
                logger.warning(f"Model {part} after training differ between processes{hint}: {listing}.")
