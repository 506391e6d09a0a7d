"""What one bitstream holds: the networks of a model, each with its BFP session and its cycle
model.

A featurizer is one network (``featurizer``, its pooled features as the one output). A detector
is every network of its cascade (MTCNN: ``pnet``, ``rnet``, ``onet``; SSD: ``ssd``; an imported
one: ``detector``), each with all of its graph outputs; they share the card's weight memory and
are flashed together. A network whose height and width are symbolic (fully convolutional, as the
P-Net over an image pyramid) runs at any input size: the matrix unit's instructions are the same,
only the number of output positions changes, so its cycle model is derived for each size it
meets (``cycle_model(shape)``, kept per size).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators.fpga.cycle_model import CardConfig, CycleModel, layers_from_onnx

if TYPE_CHECKING:
    import onnx

    from modules.accelerators.model_store import ModelManifest, ModelStore

REFERENCE_SIZE = 224  # height and width a variable-size network is warmed up and weighed at
SIZES_KEPT = 256  # cycle models kept per variable-size network (one per input size met)


@dataclass(frozen=True)
class NetworkSpec:
    """Where a network's fp32 graph lies and how it is fed."""

    name: str
    path: Path
    input_name: str
    input_shape: list[int | str]  # str: a symbolic dim
    outputs: list[str] | None  # None: every output of the graph


def _graph_io(path: Path) -> tuple[str, list[int | str], list[str]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    first = next(vi for vi in model.graph.input if vi.name not in inits)
    dims: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in first.type.tensor_type.shape.dim
    ]
    return first.name, dims, [o.name for o in model.graph.output]


def network_specs(store: ModelStore, manifest: ModelManifest) -> list[NetworkSpec]:
    """The fp32 networks ``manifest`` puts on the card, in the order its runner uses them."""
    if manifest.kind != "detector":
        return [
            NetworkSpec(
                "featurizer",
                store.featurizer_path(manifest.name, "fp32"),
                manifest.featurizer_input.name,
                list(manifest.featurizer_input.shape),
                [manifest.featurizer_output.name],
            )
        ]
    if manifest.stages:
        paths = {stage: store.resolve(v["fp32"]) for stage, v in manifest.stages.items()}
    else:
        paths = {"detector": store.featurizer_path(manifest.name, "fp32")}
    specs = []
    for name, path in paths.items():
        input_name, dims, _outputs = _graph_io(path)
        specs.append(NetworkSpec(name, path, input_name, dims, None))
    return specs


def fp32_graphs(store: ModelStore, manifest: ModelManifest) -> list[Path]:
    """The fp32 graphs whose operators decide whether the card runs ``manifest``."""
    return [spec.path for spec in network_specs(store, manifest)]


def variable_size(shape: list[int | str]) -> bool:
    return len(shape) == 4 and any(not isinstance(d, int) for d in shape[2:])


@dataclass
class Network:
    """One network on the card: the BFP session and the fp32 graph its cycle model reads."""

    spec: NetworkSpec
    session: Any
    output_names: list[str]
    graph: onnx.ModelProto
    config: CardConfig
    bits_per_value: float
    bitstream_bytes: float  # weights of every network of the bitstream (on chip or not)
    _models: OrderedDict[tuple[int, int], CycleModel] = field(default_factory=OrderedDict)

    @property
    def variable(self) -> bool:
        return variable_size(self.spec.input_shape)

    def reference_shape(self) -> list[int]:
        """The input shape at batch 1, symbolic spatial dims at ``REFERENCE_SIZE``."""
        dims = [d if isinstance(d, int) else REFERENCE_SIZE for d in self.spec.input_shape]
        return [1, *dims[1:]]

    def cycle_model(self, shape: list[int]) -> CycleModel:
        """The cycle model at the spatial size of ``shape`` (``[N, C, H, W]``)."""
        key = (shape[2], shape[3]) if self.variable and len(shape) == 4 else (0, 0)
        found = self._models.get(key)
        if found is None:
            layers = layers_from_onnx(self.graph, key if key != (0, 0) else None)
            found = CycleModel(layers, self.config, self.bits_per_value, self.bitstream_bytes)
            self._models[key] = found
            while len(self._models) > SIZES_KEPT:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(key)
        return found

    def describe(self) -> dict[str, Any]:
        """Input shape, outputs, and GMACs at batch 1 (None for a variable-size network)."""
        gmacs = None if self.variable else round(self.cycle_model([1, 1, 1, 1]).macs / 1e9, 4)
        return {
            "input_shape": list(self.spec.input_shape),
            "outputs": list(self.output_names),
            "variable_size": self.variable,
            "gmacs": gmacs,
        }


def weight_count(graph: onnx.ModelProto, spec: NetworkSpec) -> int:
    """Matrix-unit weights of ``graph`` (at the reference size when its size is variable)."""
    size = (REFERENCE_SIZE, REFERENCE_SIZE) if variable_size(spec.input_shape) else None
    return sum(layer.weights for layer in layers_from_onnx(graph, size))
