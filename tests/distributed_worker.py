"""Test helper: train a config in two CPU processes through detectron2's ``launch``
(gloo) and save every rank's final model state dict as ``rank<r>.pth``.

    python tests/distributed_worker.py CONFIG OUTPUT_DIR [KEY VALUE ...]
"""

import os
import sys

import torch
from detectron2.engine import launch
from detectron2.utils import comm

import centerx
from centerx.engine import Trainer


def worker(config_file: str, out: str, opts) -> None:
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts) + ["OUTPUT_DIR", out])
    cfg.freeze()
    centerx.register_config_datasets(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    state = {k: v.detach().cpu() for k, v in trainer.unwrapped_model.state_dict().items()}
    torch.save(state, os.path.join(out, f"rank{comm.get_rank()}.pth"))


if __name__ == "__main__":
    launch(worker, 2, dist_url="auto", args=(sys.argv[1], sys.argv[2], sys.argv[3:]))
