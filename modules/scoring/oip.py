"""Open Inference Protocol (KServe v2) messages: infer request in, infer response out.

Pure functions over bytes and dicts; ``http.py`` does the routing. Supports Triton's binary
tensor data extension (``Inference-Header-Content-Length``: a JSON header, then the binary input
tensors in order; ``binary_data_output`` / per-output ``binary_data`` for the answer) as
tritonclient sends it, and plain JSON tensors.

Inputs (one, any name): ``BYTES`` with one element holding the encoded JPEG/PNG (binary, or in
JSON as a base64 string), or ``FP32`` ``[1, 3, H, W]`` / ``[1, H, W, 3]`` already preprocessed.
Outputs are the served model's (``ServingCore.outputs``): FP32, INT32 or BYTES (UTF-8 strings).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modules.scoring.core import OUTPUTS, InvalidInput, ServingCore

if TYPE_CHECKING:
    import numpy.typing as npt

VERSION = "1"
IMAGE_INPUT = "images"  # the documented names; any input name is accepted
TENSOR_INPUT = "input"
_DTYPE_SIZES = {"FP32": 4}


@dataclass
class InferRequest:
    id: str | None
    image: bytes | None = None
    tensor: npt.NDArray[Any] | None = None
    outputs: list[str] = field(default_factory=list)
    binary: dict[str, bool] = field(default_factory=dict)


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "edgefleet", "version": version, "extensions": ["binary_tensor_data"]}


def model_metadata(core: ServingCore) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [1]}]
    if core.model.input_shape:
        shape = [1, *core.model.input_shape]
        inputs.append({"name": TENSOR_INPUT, "datatype": "FP32", "shape": shape})
    return {
        "name": core.model.name,
        "versions": [VERSION],
        "platform": "edgefleet",
        "inputs": inputs,
        "outputs": [
            {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}
            for spec in core.outputs.values()
        ],
    }


def parse_infer_request(
    body: bytes, header_length: int | None, outputs: Sequence[str] = OUTPUTS
) -> InferRequest:
    """Split the body into its JSON header and binary part; decode the one input. ``outputs``
    are the served model's output names (all of them are answered when none is named)."""
    if header_length is None:
        header_length = len(body)
    if header_length < 0 or header_length > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length} is not within the body "
            f"({len(body)} bytes)"
        )
    try:
        doc = json.loads(body[:header_length])
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"$: the inference header is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("$: the inference header must be a JSON object")
    binary = memoryview(body)[header_length:]
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InvalidInput("$.inputs: expected exactly one input (an image or a tensor)")
    request = InferRequest(id=str(doc["id"]) if "id" in doc else None)
    _read_input(request, inputs[0], binary)
    _read_outputs(request, doc, outputs)
    return request


def _read_input(request: InferRequest, spec: Any, binary: memoryview) -> None:
    import numpy as np

    path = "$.inputs[0]"
    if not isinstance(spec, dict):
        raise InvalidInput(f"{path}: expected an object")
    datatype = spec.get("datatype")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"{path}.shape: expected a list of non-negative integers")
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None and (not isinstance(size, int) or size < 0 or size > len(binary)):
        raise InvalidInput(f"{path}.parameters.binary_data_size: {size!r} is not within the body")
    if size is None and "data" not in spec:
        raise InvalidInput(f"{path}: has neither data nor parameters.binary_data_size")
    if datatype == "BYTES":
        if math.prod(shape) != 1:
            raise InvalidInput(f"{path}.shape: a BYTES image input has one element, got {shape}")
        if size is not None:
            request.image = _one_bytes_element(bytes(binary[:size]), f"{path}")
        else:
            request.image = _json_bytes(spec["data"], f"{path}.data")
        return
    if datatype == "FP32":
        count = math.prod(shape)
        if size is not None:
            if size != count * _DTYPE_SIZES["FP32"]:
                raise InvalidInput(
                    f"{path}.parameters.binary_data_size: {size} bytes do not hold {shape} FP32"
                )
            request.tensor = np.frombuffer(bytes(binary[:size]), dtype="<f4").reshape(shape)
            return
        try:
            values = np.asarray(spec["data"], dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidInput(f"{path}.data: expected numbers") from None
        if values.size != count:
            raise InvalidInput(f"{path}.data: {values.size} values do not fill shape {shape}")
        request.tensor = values.reshape(shape)
        return
    raise InvalidInput(
        f"{path}.datatype: {datatype!r} is not accepted; send BYTES (an encoded image) or FP32"
    )


def _one_bytes_element(raw: bytes, path: str) -> bytes:
    """Triton's binary BYTES layout: each element is a 4-byte little-endian length + bytes."""
    if len(raw) < 4:
        raise InvalidInput(f"{path}: binary BYTES data is shorter than its length prefix")
    (length,) = struct.unpack_from("<I", raw)
    if length != len(raw) - 4:
        raise InvalidInput(
            f"{path}: binary BYTES element says {length} bytes but {len(raw) - 4} follow"
        )
    return raw[4:]


def _json_bytes(data: Any, path: str) -> bytes:
    while isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, str):
        raise InvalidInput(f"{path}: expected one base64 string (the encoded image)")
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise InvalidInput(f"{path}: not base64: {exc}") from None


def _read_outputs(request: InferRequest, doc: dict[str, Any], available: Sequence[str]) -> None:
    params = doc.get("parameters") or {}
    default_binary = (
        bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    )
    wanted = doc.get("outputs")
    if wanted is None:
        request.outputs = list(available)
        request.binary = dict.fromkeys(available, default_binary)
        return
    if not isinstance(wanted, list) or not wanted:
        raise InvalidInput("$.outputs: expected a non-empty list")
    for i, out in enumerate(wanted):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise InvalidInput(f"$.outputs[{i}].name: expected a string")
        if out["name"] not in available:
            raise InvalidInput(
                f"$.outputs[{i}].name: unknown output {out['name']!r}; "
                f"this model has {', '.join(available)}"
            )
        out_params = out.get("parameters") or {}
        binary = (
            out_params.get("binary_data", default_binary)
            if isinstance(out_params, dict)
            else default_binary
        )
        request.outputs.append(out["name"])
        request.binary[out["name"]] = bool(binary)


def _encode_tensor(array: npt.NDArray[Any]) -> tuple[str, bytes, list[Any]]:
    """(datatype, binary form, JSON data) of an output: float -> FP32, integer -> INT32,
    bytes/str objects -> BYTES (binary: 4-byte little-endian length + bytes per element)."""
    import numpy as np

    if array.dtype == object:
        items = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()]
        blob = b"".join(struct.pack("<I", len(v)) + v for v in items)
        return "BYTES", blob, [v.decode(errors="replace") for v in items]
    if np.issubdtype(array.dtype, np.integer):
        ints = np.ascontiguousarray(array, dtype="<i4")
        return "INT32", ints.tobytes(), ints.ravel().tolist()
    floats = np.ascontiguousarray(array, dtype="<f4")
    return "FP32", floats.tobytes(), floats.ravel().tolist()


def encode_response(
    model: str,
    request: InferRequest,
    results: dict[str, npt.NDArray[Any]],
) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the JSON header's length."""
    import numpy as np

    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in request.outputs:
        array = np.asarray(results[name])
        datatype, blob, data = _encode_tensor(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if request.binary.get(name):
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = data
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": VERSION, "outputs": outputs}
    if request.id is not None:
        doc["id"] = request.id
    header = json.dumps(doc).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
