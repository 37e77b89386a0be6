"""TTFNet's upsampler: CenterNet-like upsampling path with shortcut connections
from the backbone stages of the same stride."""

from collections.abc import Sequence

from detectron2.layers import ShapeSpec, get_norm
from torch import nn

from ...config import ConfigValueError
from ..deform_conv import ModulatedDeformConv2d


def shortcut_convs(in_channels: int, out_channels: int, num_convs: int, kernel_size: int = 3) -> nn.Sequential:
    """``num_convs`` k x k convs (with bias; k = ``kernel_size``, TTFNet's 3 or a
    pointwise 1) with a ReLU between consecutive ones and none after the last,
    Kaiming-initialised.

    Input [N, in_channels, H, W] -> output [N, out_channels, H, W].
    """
    layers = []
    for i in range(num_convs):
        conv = nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers.append(conv)
        if i < num_convs - 1:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class TTFNetUpsampler(nn.Module):
    """Stages of [3x3 conv (or modulated DCN) + norm + ReLU + bilinear x2 upsampling],
    each followed by ``+ shortcut(backbone feature of the new stride)``.

    Starting from the backbone feature of the largest stride S, stage k (k = 1, 2,
    ...) outputs stride S / 2^k; with ResNet / DarkNet and three stages that is
    stride 16, 8, 4 with shortcuts from res4, res3, res2 (dark4, dark3, dark2).

    Follows the upsampler interface of :class:`CenterNetUpsampler` (``in_feature``,
    ``out_channels``, ``out_stride``, features dict in, one map out).

    Input: dict of backbone features ``name -> [N, C_name, H / s_name, W / s_name]``.
    Output: [N, channels[-1], H / out_stride, W / out_stride], out_stride = S / 2^len(channels).
    """

    def __init__(
        self,
        input_shapes: dict[str, ShapeSpec],
        in_features: Sequence[str],
        channels: Sequence[int] = (256, 128, 64),
        num_shortcut_convs: Sequence[int] = (1, 2, 3),
        deformable: bool = False,
        norm: str = "BN",
        shortcut_kernel_size: int = 3,
    ):
        """
        Args:
            input_shapes: the backbone's ``output_shape()``.
            in_features: names of the backbone features to use, shallow to deep (the keys of its ``output_shape()``).
            channels: output channels of each upsampling stage.
            num_shortcut_convs: convs of each stage's shortcut; 0 = no shortcut.
            deformable: modulated deformable 3x3 convs instead of plain ones.
            norm: detectron2 norm name ("BN", "SyncBN", ...).
            shortcut_kernel_size: kernel of the shortcut convs: 3 (TTFNet's) or 1
                (pointwise, as FPN's lateral connections: a ninth of the multiply-adds).
        """
        super().__init__()
        if shortcut_kernel_size not in (1, 3):
            raise ConfigValueError(f"MODEL.TTFNET.SHORTCUT_KERNEL_SIZE must be 1 or 3; got {shortcut_kernel_size}.")
        if len(num_shortcut_convs) != len(channels):
            raise ConfigValueError(
                f"MODEL.TTFNET.SHORTCUT_CONVS {tuple(num_shortcut_convs)} needs one entry per upsampling "
                f"stage of MODEL.TTFNET.UPSAMPLE_CHANNELS {tuple(channels)}."
            )
        by_stride = {input_shapes[f].stride: f for f in in_features}
        stride = max(by_stride)
        self.in_feature = by_stride[stride]
        in_channels = input_shapes[self.in_feature].channels
        self.stages = nn.ModuleList()
        self.shortcuts = nn.ModuleDict()
        self.shortcut_features = []
        for out, n in zip(channels, num_shortcut_convs):
            conv = (
                ModulatedDeformConv2d(in_channels, out, 3, padding=1, bias=False)
                if deformable
                else nn.Conv2d(in_channels, out, 3, padding=1, bias=False)
            )
            self.stages.append(
                nn.Sequential(
                    conv,
                    get_norm(norm, out),
                    nn.ReLU(inplace=True),
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                )
            )
            stride //= 2
            if n > 0:
                if stride not in by_stride:
                    available = {f: input_shapes[f].stride for f in in_features}
                    raise ConfigValueError(
                        f"A TTFNet shortcut needs a backbone feature of stride {stride}; the backbone gives "
                        f"{available} (set its MODEL.TTFNET.SHORTCUT_CONVS entry to 0 or add the feature)."
                    )
                name = by_stride[stride]
                self.shortcuts[name] = shortcut_convs(input_shapes[name].channels, out, n, shortcut_kernel_size)
                self.shortcut_features.append(name)
            else:
                self.shortcut_features.append(None)
            in_channels = out
        self.out_channels = in_channels
        self.out_stride = stride

    def forward(self, features):
        x = features[self.in_feature]
        for stage, name in zip(self.stages, self.shortcut_features):
            x = stage(x)
            if name is not None:
                x = x + self.shortcuts[name](features[name])
        return x
