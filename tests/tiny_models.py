"""Tiny detectors with non-trivial random weights, shared by the deployment,
model-option and flip tests: ResNet-18, 3 classes, narrow upsampler and heads,
K = 10 detections, 128 px export size."""

import os

import torch
from detectron2.modeling import build_model

import centerx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (128, 128)
K = 10


def tiny_cfg(meta_arch="CenterNet", *opts):
    """ResNet-18, 3 classes, narrow upsampler and heads, K = 10, 128 px export size."""
    base = {"CenterNet": "Base-CenterNet.yaml", "TTFNet": "Base-TTFNet.yaml"}[meta_arch]
    key = meta_arch.upper()
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", base))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            f"MODEL.{key}.NUM_CLASSES",
            "3",
            f"MODEL.{key}.UPSAMPLE_CHANNELS",
            "[64, 32, 32]",
            f"MODEL.{key}.DEFORMABLE",
            "False",
            "TEST.DETECTIONS_PER_IMAGE",
            str(K),
            "EXPORT.INPUT_SIZE",
            str(SIZE),
            "OUTPUT_DIR",
            "",
        ]
    )
    if meta_arch == "CenterNet":
        cfg.merge_from_list(["MODEL.CENTERNET.HEAD_CHANNELS", "16"])
    else:
        cfg.merge_from_list(
            [
                "MODEL.TTFNET.HEATMAP_HEAD_CHANNELS",
                "16",
                "MODEL.TTFNET.BOX_HEAD_CHANNELS",
                "16",
                "MODEL.TTFNET.BOX_HEAD_BIAS",
                "1.0",
            ]
        )
    cfg.merge_from_list(list(opts))
    return cfg


def randomize_(model, seed=0):
    """Non-trivial random weights, so that the maps have many distinct peaks:
    BatchNorm statistics and affine, He-normal neck convs (CoordConv and SPP when
    on, upsampler), N(0, 0.1) heads, heatmap and IoU biases 0, regression biases 2."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
        for neck in (model.coord_conv, model.spp, model.upsampler):
            for m in neck.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                    m.weight.normal_(0, (2.0 / m.weight[0].numel()) ** 0.5, generator=g)
        for m in model.heads.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, 0.1, generator=g)
                m.bias.zero_()
        for name, head in model.heads.named_children():
            if name not in ("heatmap", "iou"):  # sizes start positive, so no box is empty
                head.layers[-1].bias.fill_(2.0)
    return model


def build(meta_arch="CenterNet", *opts, seed=0):
    torch.manual_seed(seed)
    return randomize_(build_model(tiny_cfg(meta_arch, *opts)).eval(), seed)


def images(n, h, w, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


SHAPES_CENTERNET = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")


def tiny_train_cfg(output_dir, dataset, *opts, size=64, batch=2, iters=3, seed=1):
    """The CenterNet shapes demo shrunk for a CPU unit test: ``dataset`` for training
    and testing at ``size`` px, ``batch`` images, ``iters`` iterations without
    warm-up, data in the main process, no periodic checkpoint nor prediction
    images, OUTPUT_DIR ``output_dir``, then ``opts``."""
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(SHAPES_CENTERNET)
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN",
            f"('{dataset}',)",
            "DATASETS.TEST",
            f"('{dataset}',)",
            "INPUT.TRAIN_SIZE",
            str(size),
            "INPUT.MIN_SIZE_TEST",
            str(size),
            "INPUT.MAX_SIZE_TEST",
            str(size),
            "SOLVER.IMS_PER_BATCH",
            str(batch),
            "SOLVER.MAX_ITER",
            str(iters),
            "SOLVER.WARMUP_ITERS",
            "0",
            "SOLVER.STEPS",
            "()",
            "SOLVER.CHECKPOINT_PERIOD",
            "100000",
            "DATALOADER.NUM_WORKERS",
            "0",
            "TEST.VIS_IMAGES",
            "0",
            "OUTPUT_DIR",
            str(output_dir),
            "SEED",
            str(seed),
        ]
    )
    cfg.merge_from_list(list(opts))
    return cfg
