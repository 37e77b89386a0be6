"""detectron2's checkpointer with atomic writes."""

import glob
import logging
import os
from typing import Any

import torch

from ..checkpoint import SafeCheckpointer


def _atomic_write(path: str, write) -> None:
    """``write(f)`` into ``path`` so that ``path`` is either its old content or
    the complete new one, never a partial file: write a temporary file next to
    it, flush it to disk, then rename it over ``path``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_temporary_files(save_dir: str) -> list[str]:
    """Delete the temporary files (``<name>.tmp-<pid>``) that a run killed while
    writing a checkpoint left in ``save_dir``; returns their paths. Call it when
    no process writes there (before training starts)."""
    stale = sorted(
        glob.glob(os.path.join(save_dir, "*.pth.tmp-*")) + glob.glob(os.path.join(save_dir, "last_checkpoint.tmp-*"))
    )
    for path in stale:
        os.remove(path)
    if stale:
        logging.getLogger(__name__).warning(
            f"Removed {len(stale)} partial checkpoint file(s) left by an interrupted "
            f"save: {', '.join(os.path.basename(p) for p in stale)}"
        )
    return stale


class AtomicCheckpointer(SafeCheckpointer):
    """The training checkpointer: checkpoint files and the ``last_checkpoint`` tag
    are written atomically (on local paths), so a run killed while saving leaves
    the previous checkpoint complete and tagged; files are read safely and
    loaded leniently (:class:`~centerx.checkpoint.SafeCheckpointer`). Paths that
    are not local (other ``PathManager`` handlers) are written as detectron2 does."""

    def _is_local(self) -> bool:
        return os.path.isdir(self.save_dir)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._is_local():
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local():
            return super().tag_last_checkpoint(last_filename_basename)
        _atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename.encode())
        )
