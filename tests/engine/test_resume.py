"""Nothing is lost: checkpoints are written atomically, and a run stopped at
iteration N and resumed to 2N ends with the weights of a run trained to 2N
straight (data stream, augmentations, optimizer, schedule and EMA included)."""

import os
import shutil

import pytest
import torch
from detectron2.config import get_cfg

import centerx
from centerx.data.samplers import PositionedDataset, ResumableTrainingSampler
from centerx.engine import AtomicCheckpointer, Trainer
from centerx.engine.train_loader import step_seed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMOS = {
    arch: os.path.join(REPO, "configs", "shapes", f"{arch.lower()}_r18_demo.yaml") for arch in ("CenterNet", "TTFNet")
}


def run_cfg(dataset, output_dir, *opts, arch="CenterNet"):
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(DEMOS[arch])
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN",
            f"('{dataset}',)",
            "DATASETS.TEST",
            "()",
            "INPUT.TRAIN_SIZE",
            "64",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.MAX_ITER",
            "6",
            "SOLVER.WARMUP_ITERS",
            "2",
            "SOLVER.CHECKPOINT_PERIOD",
            "3",
            "DATALOADER.NUM_WORKERS",
            "0",
            "MODEL_EMA.ENABLED",
            "True",
            "MODEL_EMA.WARMUP_ITERS",
            "3",
            "MODEL_EMA.DECAY",
            "0.9",
            "OUTPUT_DIR",
            str(output_dir),
            "SEED",
            "5",
        ]
    )
    cfg.merge_from_list(list(opts))
    return cfg


def train(cfg, resume=False):
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def weights(trainer):
    model = {k: v.clone() for k, v in trainer.unwrapped_model.state_dict().items()}
    return model, {k: v.clone() for k, v in trainer.ema.state.items()}


def assert_same(a, b, tol=1e-6):
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())
    assert worst <= tol, worst


def resume_from_half(straight_dir, output_dir, cfg_opts, dataset, arch="CenterNet"):
    """A run that stopped after iteration 3 of 6: the straight run's checkpoint at
    that point, alone in a new directory, then --resume."""
    os.makedirs(output_dir)
    shutil.copy(os.path.join(straight_dir, "model_0000002.pth"), output_dir)
    with open(os.path.join(output_dir, "last_checkpoint"), "w") as f:
        f.write("model_0000002.pth")
    return train(run_cfg(dataset, output_dir, *cfg_opts, arch=arch), resume=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_at_n_to_2n_equals_2n_straight(tiny_shapes, tmp_path, workers, one_thread, clean_worker_start):
    """6 iterations straight vs 3 + resume to 6: identical weights and EMA, with
    the data loaded in the main process or by two workers."""
    name, _ = tiny_shapes
    opts = ["DATALOADER.NUM_WORKERS", str(workers)]
    straight = train(run_cfg(name, tmp_path / "straight", *opts))
    resumed = resume_from_half(tmp_path / "straight", tmp_path / "resumed", opts, name)
    assert resumed.start_iter == 3 and resumed.iter == 6
    (w_straight, ema_straight), (w_resumed, ema_resumed) = weights(straight), weights(resumed)
    assert_same(w_straight, w_resumed)
    assert_same(ema_straight, ema_resumed)
    assert resumed.ema.updates == straight.ema.updates == 6


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_resume_is_exact_with_mixup_multiscale_and_dropblock(arch, tiny_shapes, tmp_path, one_thread):
    """The randomised training options replay after a resume: mixup and the
    drawn sizes come from the stream, DropBlock's masks from the per-step seed."""
    name, _ = tiny_shapes
    opts = [
        "INPUT.TRAIN_SIZES",
        "(64, 96)",
        "INPUT.MIXUP.ENABLED",
        "True",
        "INPUT.MIXUP.PROB",
        "0.7",
        "MODEL.CENTERX.DROPBLOCK.ENABLED",
        "True",
        "MODEL.CENTERX.DROPBLOCK.DROP_PROB",
        "0.3",
    ]
    straight = train(run_cfg(name, tmp_path / "straight", *opts, arch=arch))
    resumed = resume_from_half(tmp_path / "straight", tmp_path / "resumed", opts, name, arch=arch)
    assert resumed.start_iter == 3 and resumed.iter == 6
    (w_straight, ema_straight), (w_resumed, ema_resumed) = weights(straight), weights(resumed)
    assert_same(w_straight, w_resumed)
    assert_same(ema_straight, ema_resumed)


def test_step_seeds_differ_per_step_and_process():
    seeds = {step_seed(s, i, r) for s in (0, 1) for i in range(50) for r in range(4)}
    assert len(seeds) == 2 * 50 * 4
    assert step_seed(3, 7, 1) == step_seed(3, 7, 1)


def test_detectron2_sampler_does_not_resume_exactly(tiny_shapes, tmp_path, one_thread):
    """The comparison above can fail: with detectron2's TrainingSampler the
    resumed run starts its stream over and ends with other weights."""
    name, _ = tiny_shapes
    opts = ["DATALOADER.SAMPLER_TRAIN", "TrainingSampler"]
    straight = train(run_cfg(name, tmp_path / "straight", *opts))
    resumed = resume_from_half(tmp_path / "straight", tmp_path / "resumed", opts, name)
    a, b = weights(straight)[0], weights(resumed)[0]
    assert max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()) > 1e-4


def test_stream_positions_and_shards():
    """Sampler positions per rank and the dataset's epoch permutations."""
    sampler = ResumableTrainingSampler(start=10)
    it = iter(sampler)
    assert [next(it) for _ in range(3)] == [10, 11, 12]
    dicts = [{"i": i} for i in range(5)]
    dataset = PositionedDataset(dicts, mapper=lambda d: d["i"], seed=3)
    epoch0 = [dataset[p] for p in range(5)]
    epoch1 = [dataset[p] for p in range(5, 10)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(5))  # each epoch is a permutation
    assert [dataset[p] for p in range(5)] == epoch0  # a pure function of the position
    other_seed = PositionedDataset(dicts, mapper=lambda d: d["i"], seed=4)
    assert [other_seed[p] for p in range(10)] != epoch0 + epoch1


def test_positioned_dataset_seeds_each_sample_and_skips_unreadable():
    """Random draws inside the mapper depend on the position only, whatever was
    drawn before; a mapper returning None moves on to the next entry."""
    import numpy as np

    dataset = PositionedDataset([{"i": i} for i in range(4)], mapper=lambda d: (d["i"], np.random.rand()), seed=1)
    first = dataset[7]
    np.random.rand(100)
    assert dataset[7] == first
    assert dataset[8][1] != first[1]
    skipping = PositionedDataset(
        [{"i": i} for i in range(4)], mapper=lambda d: None if d["i"] == 2 else d["i"], seed=1, shuffle=False
    )
    assert [skipping[p] for p in range(4)] == [0, 1, 3, 3]
    with pytest.raises(RuntimeError, match="skipped every image"):
        PositionedDataset([{"i": 0}], mapper=lambda d: None, seed=1)[0]
    with pytest.raises(ValueError, match="empty"):
        PositionedDataset([], mapper=lambda d: d, seed=1)


def test_killed_save_leaves_the_last_checkpoint_loadable(tmp_path, monkeypatch):
    """A save that dies half-way (here: torch.save raising after writing part of
    the file) leaves the previous checkpoint complete and still tagged, and no
    stray file."""
    model = torch.nn.Linear(3, 2)
    ckpt = AtomicCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_0000009")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)

    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"partial checkpoint bytes")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000019")
    monkeypatch.setattr(torch, "save", real_save)

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]
    assert ckpt.get_checkpoint_file().endswith("model_0000009.pth")
    fresh = torch.nn.Linear(3, 2)
    AtomicCheckpointer(fresh, save_dir=str(tmp_path)).resume_or_load("", resume=True)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, saved[k])
