"""SSD300 on a VGG-16 backbone in plain ``torch.nn`` (for cost and latency: synthetic weights).

The layout of the SSD paper's 300x300 model: VGG-16's convolutions to conv5_3 (pool5 3x3 stride
1), a dilated 3x3 conv6 and a 1x1 conv7 in place of the fully connected layers, four extra
stages, and 3x3 location / class heads on six feature maps (38, 19, 10, 5, 3, 1 cells a side;
4, 6, 6, 6, 4, 4 anchors a cell: 8732 anchors). conv4_3's map is L2-normalized with a learned
per-channel scale. Outputs: ``loc`` [N, 8732, 4] offsets and ``conf`` [N, 8732, classes]
softmax probabilities (class 0 = background).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch
from torch import nn

SIZE = 300
VOC_CLASSES = 21  # 20 PASCAL VOC classes + background
ANCHORS_PER_CELL = (4, 6, 6, 6, 4, 4)
_VGG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512)


class SsdVgg(nn.Module):
    def __init__(self, classes: int = VOC_CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in _VGG:
            if item in ("M", "C"):
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=item == "C"))
            else:
                layers += [nn.Conv2d(cin, int(item), 3, padding=1), nn.ReLU()]
                cin = int(item)
        self.to_conv4_3 = nn.Sequential(*layers[:23])  # ends after conv4_3's ReLU: 38x38
        self.to_conv7 = nn.Sequential(
            *layers[23:],
            nn.MaxPool2d(3, 1, padding=1),
            nn.Conv2d(512, 1024, 3, padding=6, dilation=6),
            nn.ReLU(),
            nn.Conv2d(1024, 1024, 1),
            nn.ReLU(),
        )
        self.l2_scale = nn.Parameter(torch.full((1, 512, 1, 1), 20.0))

        def extra(cin: int, mid: int, cout: int, stride: int, pad: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, mid, 1),
                nn.ReLU(),
                nn.Conv2d(mid, cout, 3, stride=stride, padding=pad),
                nn.ReLU(),
            )

        self.extras = nn.ModuleList(
            [
                extra(1024, 256, 512, 2, 1),  # 10x10
                extra(512, 128, 256, 2, 1),  # 5x5
                extra(256, 128, 256, 1, 0),  # 3x3
                extra(256, 128, 256, 1, 0),  # 1x1
            ]
        )
        channels = (512, 1024, 512, 256, 256, 256)
        self.classes = classes
        self.loc = nn.ModuleList(
            nn.Conv2d(c, a * 4, 3, padding=1)
            for c, a in zip(channels, ANCHORS_PER_CELL, strict=True)
        )
        self.conf = nn.ModuleList(
            nn.Conv2d(c, a * classes, 3, padding=1)
            for c, a in zip(channels, ANCHORS_PER_CELL, strict=True)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.to_conv4_3(x)
        maps = [x / (x.norm(dim=1, keepdim=True) + 1e-10) * self.l2_scale]
        x = self.to_conv7(x)
        maps.append(x)
        for stage in self.extras:
            x = stage(x)
            maps.append(x)
        n = x.shape[0]
        loc = torch.cat(
            [
                h(m).permute(0, 2, 3, 1).reshape(n, -1, 4)
                for h, m in zip(self.loc, maps, strict=True)
            ],
            1,
        )
        conf = torch.cat(
            [
                h(m).permute(0, 2, 3, 1).reshape(n, -1, self.classes)
                for h, m in zip(self.conf, maps, strict=True)
            ],
            1,
        )
        return loc, torch.softmax(conf, dim=-1)


def synthetic(name: str) -> SsdVgg:
    """Deterministic weights seeded from the model name (cost and latency only)."""
    torch.manual_seed(zlib.crc32(name.encode()))
    net = SsdVgg()
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    for head in (*net.loc, *net.conf):
        assert isinstance(head, nn.Conv2d)
        nn.init.normal_(head.weight, 0.0, 0.01)
    return net.eval()


def export(net: SsdVgg, path: Path, opset: int = 17) -> None:
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, SIZE, SIZE),),
        str(path),
        input_names=["images"],
        output_names=["loc", "conf"],
        dynamic_axes={"images": {0: "batch"}, "loc": {0: "batch"}, "conf": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
