"""MTCNN's three networks in plain ``torch.nn`` (imported only when building the face detector).

Parameter names match the state dicts that the ``facenet-pytorch`` wheel ships
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``: MTCNN's published weights, converted from the
original Caffe models). Each network ends in the face probability (softmax over face / not face,
the face column only) and the box regression; the O-Net also gives five landmarks. Those weights
were made on transposed images, so the dense layers read the last feature map in (W, H, C) order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIST = "facenet-pytorch"
STAGES = ("pnet", "rnet", "onet")
STAGE_SIZES = {"rnet": 24, "onet": 48}  # the crop side R-Net and O-Net take


# (in channels, out channels, kernel, max pool (kernel, stride) after it or None) per conv
ConvSpec = tuple[int, int, int, tuple[int, int] | None]


class _ConvStack(nn.Module):
    """``conv{i}`` + ``prelu{i}`` (+ a ceil-mode max pool) for i = 1.., as the weights name them."""

    def __init__(self, convs: list[ConvSpec]) -> None:
        super().__init__()
        self._pools: list[nn.Module | None] = []
        for i, (cin, cout, kernel, pool) in enumerate(convs, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel))
            setattr(self, f"prelu{i}", nn.PReLU(cout))
            self._pools.append(nn.MaxPool2d(*pool, ceil_mode=True) if pool else None)
        self._depth = len(convs)

    def convs(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self._depth + 1):
            x = getattr(self, f"prelu{i}")(getattr(self, f"conv{i}")(x))
            pool = self._pools[i - 1]
            if pool is not None:
                x = pool(x)
        return x


def _face_probability(logits: torch.Tensor) -> torch.Tensor:
    """Two-way softmax over dim 1 (not face, face) -> the face column, dim kept."""
    return torch.softmax(logits, dim=1)[:, 1:2]


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 2, 1).flatten(1)


class PNet(_ConvStack):
    """Fully convolutional proposal net: any image -> a 12x12-window grid with stride 2."""

    def __init__(self) -> None:
        super().__init__([(3, 10, 3, (2, 2)), (10, 16, 3, None), (16, 32, 3, None)])
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.convs(x)
        return _face_probability(self.conv4_1(x)), self.conv4_2(x)


class RNet(_ConvStack):
    """Refinement net: 24x24 crops -> probability [N, 1], box regression [N, 4]."""

    def __init__(self) -> None:
        super().__init__([(3, 28, 3, (3, 2)), (28, 48, 3, (3, 2)), (48, 64, 2, None)])
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu4(self.dense4(_flatten_whc(self.convs(x))))
        return _face_probability(self.dense5_1(x)), self.dense5_2(x)


class ONet(_ConvStack):
    """Output net: 48x48 crops -> probability [N, 1], box regression [N, 4], landmarks [N, 10]
    (five x values, then five y values, as fractions of the box)."""

    def __init__(self) -> None:
        super().__init__(
            [(3, 32, 3, (3, 2)), (32, 64, 3, (3, 2)), (64, 64, 3, (2, 2)), (64, 128, 2, None)]
        )
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.prelu5(self.dense5(_flatten_whc(self.convs(x))))
        return _face_probability(self.dense6_1(x)), self.dense6_2(x), self.dense6_3(x)


class FirstOutput(nn.Module):
    """A network's first output only (the probability), for tools that expect one tensor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)[0]
        return out


NETS: dict[str, type[nn.Module]] = {"pnet": PNet, "rnet": RNet, "onet": ONet}
OUTPUT_NAMES = {
    "pnet": ["prob", "reg"],
    "rnet": ["prob", "reg"],
    "onet": ["prob", "reg", "landmarks"],
}


def weights_file(stage: str) -> Path:
    """The stage's state dict inside the installed facenet-pytorch distribution (found through
    its metadata: importing the package would pull in its pinned dependencies)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(WEIGHTS_DIST)
    except PackageNotFoundError:
        raise FileNotFoundError(
            f"the {WEIGHTS_DIST} package (MTCNN's weights) is not installed; install it without "
            f"its dependencies: pip install --no-deps {WEIGHTS_DIST}==2.6.0 (.ci/install does)"
        ) from None
    path = Path(str(dist.locate_file(f"facenet_pytorch/data/{stage}.pt")))
    if not path.is_file():
        raise FileNotFoundError(f"{WEIGHTS_DIST} {dist.version} has no {path.name}")
    return path


def load_stage(stage: str) -> nn.Module:
    net = NETS[stage]()
    state = torch.load(str(weights_file(stage)), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def export_stage(net: nn.Module, stage: str, path: Path, opset: int = 17) -> None:
    """ONNX with a symbolic batch (and, for the P-Net, symbolic height and width)."""
    size = STAGE_SIZES.get(stage, 12)
    outputs = OUTPUT_NAMES[stage]
    axes: dict[str, dict[int, str]] = {"images": {0: "batch"}}
    if stage == "pnet":
        axes["images"].update({2: "height", 3: "width"})
        axes.update({name: {0: "batch", 2: "rows", 3: "cols"} for name in outputs})
    else:
        axes.update({name: {0: "batch"} for name in outputs})
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, size, size),),
        str(path),
        input_names=["images"],
        output_names=outputs,
        dynamic_axes=axes,
        opset_version=opset,
        dynamo=False,
    )
