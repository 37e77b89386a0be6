"""Dense prediction heads on the stride-4 feature map."""

import torch
import torch.nn.functional as F
from detectron2.layers import get_norm
from torch import nn

from .dropblock import DropBlock


class ConvHead(nn.Module):
    """``num_convs`` x (3x3 conv [+ norm] + ReLU [+ DropBlock]) then a 1x1 conv to ``out_channels``.

    Input [N, C_in, H, W] -> output [N, out_channels, H, W] (raw, no activation).
    The last conv's bias starts at ``bias_init``; with ``std`` > 0 all convs
    start from N(0, std) weights (CenterNet's regression heads use 0.001).
    ``norm`` is a detectron2 ``get_norm`` name ("" = none, as in the papers).
    ``drop_block`` = (drop_prob, block_size) puts a :class:`DropBlock` after each
    ReLU, in the ReLU's slot of ``layers`` (ReLU and DropBlock in one
    ``nn.Sequential``), so the parameter names are the same with and without it.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_convs: int = 1,
        bias_init: float = 0.0,
        std: float = 0.0,
        norm: str = "",
        drop_block: tuple[float, int] | None = None,
    ):
        super().__init__()
        layers = []
        for _ in range(num_convs):
            layers.append(nn.Conv2d(in_channels, hidden_channels, 3, padding=1))
            if norm:
                layers.append(get_norm(norm, hidden_channels))
            relu = nn.ReLU(inplace=True)
            layers.append(nn.Sequential(relu, DropBlock(*drop_block)) if drop_block is not None else relu)
            in_channels = hidden_channels
        layers.append(nn.Conv2d(in_channels, out_channels, 1))
        self.layers = nn.Sequential(*layers)
        for m in self.layers:
            if isinstance(m, nn.Conv2d):
                if std > 0:
                    nn.init.normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.layers[-1].bias, bias_init)

    def hidden(self, x):
        """The input of the last conv: [N, hidden_channels, H, W] (``x`` itself when ``num_convs`` is 0)."""
        return self.layers[:-1](x)

    def forward(self, x):
        return self.layers(x)


class CenterNetHeads(nn.Module):
    """CenterNet's three heads.

    Output dict of maps at output stride (4):
        ``heatmap`` [N, C, H, W] logits, ``wh`` [N, 2, H, W] box width/height in
        output-stride cells, ``offset`` [N, 2, H, W] sub-cell centre offset (x, y).
    ``drop_block``: (drop_prob, block_size) of a DropBlock in every head, or None.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_channels: int = 64,
        heatmap_bias: float = -2.19,
        norm: str = "",
        drop_block: tuple[float, int] | None = None,
    ):
        super().__init__()
        self.heatmap = ConvHead(
            in_channels, hidden_channels, num_classes, bias_init=heatmap_bias, norm=norm, drop_block=drop_block
        )
        self.wh = ConvHead(in_channels, hidden_channels, 2, std=0.001, norm=norm, drop_block=drop_block)
        self.offset = ConvHead(in_channels, hidden_channels, 2, std=0.001, norm=norm, drop_block=drop_block)

    def forward(self, x) -> dict[str, torch.Tensor]:
        return {"heatmap": self.heatmap(x), "wh": self.wh(x), "offset": self.offset(x)}


class TTFNetHeads(nn.Module):
    """TTFNet's two heads (each ``num_convs`` x (3x3 conv + ReLU) then a 1x1 conv).

    Output dict of maps at output stride:
        ``heatmap`` [N, C, H, W] logits;
        ``ltrb`` [N, 4, H, W] distances from each cell point to the box's left,
        top, right and bottom sides in input pixels, ReLU(x) * ``box_base``;
        with ``iou_aware``, ``iou`` [N, 1, H, W] logits of the IoU of each cell's
        box with the object it regresses: one more output channel of the box
        head, a 1x1 conv ``iou`` on the box head's hidden features (its own
        module, so a plain TTFNet checkpoint loads with only ``iou`` new).
    Initialisation as the authors': N(0, 0.01) heatmap convs with the last bias
    at ``heatmap_bias``, N(0, 0.001) box convs with the last bias at ``box_bias``
    (the authors use 0: every cell starts with an empty box); the ``iou`` conv
    N(0, 0.001) with bias 0 (IoU 0.5 everywhere).
    ``drop_block``: (drop_prob, block_size) of a DropBlock in both heads, or None.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        heatmap_channels: int = 128,
        heatmap_convs: int = 2,
        box_channels: int = 64,
        box_convs: int = 2,
        heatmap_bias: float = -2.19,
        box_base: float = 16.0,
        box_bias: float = 0.0,
        norm: str = "",
        drop_block: tuple[float, int] | None = None,
        iou_aware: bool = False,
    ):
        super().__init__()
        self.heatmap = ConvHead(
            in_channels,
            heatmap_channels,
            num_classes,
            heatmap_convs,
            bias_init=heatmap_bias,
            std=0.01,
            norm=norm,
            drop_block=drop_block,
        )
        self.ltrb = ConvHead(
            in_channels, box_channels, 4, box_convs, bias_init=box_bias, std=0.001, norm=norm, drop_block=drop_block
        )
        self.iou = None
        if iou_aware:
            self.iou = nn.Conv2d(box_channels if box_convs > 0 else in_channels, 1, 1)
            nn.init.normal_(self.iou.weight, std=0.001)
            nn.init.zeros_(self.iou.bias)
        self.box_base = box_base

    def forward(self, x) -> dict[str, torch.Tensor]:
        out = {"heatmap": self.heatmap(x)}
        if self.iou is None:
            out["ltrb"] = F.relu(self.ltrb(x)) * self.box_base
            return out
        hidden = self.ltrb.hidden(x)
        out["ltrb"] = F.relu(self.ltrb.layers[-1](hidden)) * self.box_base
        out["iou"] = self.iou(hidden)
        return out
