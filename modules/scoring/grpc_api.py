"""TF-Serving gRPC front end: ``tensorflow.serving.PredictionService`` Predict + GetModelMetadata.

As Azure ML's accelerated-models ``PredictionClient`` calls it: metadata
``authorization: Bearer <key>``, an empty ``model_spec``, one ``DT_STRING`` input of shape [1]
holding the encoded image (any input name), no ``output_filter``. The answer is one float
output, ``scores`` [1, classes], or each output ``output_filter`` names. A ``DT_FLOAT`` input
[1, 3, H, W] / [1, H, W, 3] is taken as an already preprocessed tensor. A detector answers all
its outputs (``DT_FLOAT`` boxes and scores, ``DT_INT32`` classes, ``DT_STRING`` labels) unless
``output_filter`` names some.
"""

from __future__ import annotations

import math
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from modules.scoring.core import (
    SCORES,
    InvalidInput,
    Overloaded,
    ServingCore,
    ServingError,
    Unavailable,
)
from modules.scoring.tfserving import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    signature_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
IMAGE_INPUT = "images"
MESSAGE_ALLOWANCE = 1024 * 1024  # protobuf framing on top of the image cap


@dataclass(frozen=True)
class Tls:
    cert_chain: bytes
    private_key: bytes


def _shape(dims: list[int]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )


DTYPES = {"FP32": types_pb2.DT_FLOAT, "INT32": types_pb2.DT_INT32, "BYTES": types_pb2.DT_STRING}


def tensor_proto(array: npt.NDArray[Any]) -> tensor_pb2.TensorProto:
    """float -> DT_FLOAT, integer -> DT_INT32 (``tensor_content``, little-endian); bytes or
    str objects -> DT_STRING (``string_val``)."""
    import numpy as np

    shape = _shape(list(array.shape))
    if array.dtype == object:
        values = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()]
        return tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=values
        )
    if np.issubdtype(array.dtype, np.integer):
        ints = np.ascontiguousarray(array, dtype="<i4")
        return tensor_pb2.TensorProto(
            dtype=types_pb2.DT_INT32, tensor_shape=shape, tensor_content=ints.tobytes()
        )
    data = np.ascontiguousarray(array, dtype="<f4")
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=data.tobytes()
    )


def float_tensor(proto: tensor_pb2.TensorProto, path: str) -> npt.NDArray[np.float32]:
    """A DT_FLOAT TensorProto (tensor_content or float_val) as an array of its shape."""
    import numpy as np

    shape = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise InvalidInput(f"{path}.tensor_shape: unknown dimension in {shape}")
    count = math.prod(shape)
    if proto.tensor_content:
        if len(proto.tensor_content) != count * 4:
            raise InvalidInput(
                f"{path}.tensor_content: {len(proto.tensor_content)} bytes do not hold "
                f"{shape} floats"
            )
        values = np.frombuffer(proto.tensor_content, dtype="<f4")
    else:
        values = np.asarray(proto.float_val, dtype=np.float32)
        if values.size == 1 and count > 1:
            values = np.full(count, values[0], dtype=np.float32)  # TF's splat form
        if values.size != count:
            raise InvalidInput(f"{path}.float_val: {values.size} values do not fill {shape}")
    return values.reshape(shape)


def image_bytes(proto: tensor_pb2.TensorProto, path: str) -> bytes:
    shape = [d.size for d in proto.tensor_shape.dim]
    if math.prod(shape) != 1 or len(proto.string_val) != 1:
        raise InvalidInput(
            f"{path}: a DT_STRING image input has shape [1] and one string_val, got shape "
            f"{shape} with {len(proto.string_val)} value(s)"
        )
    return bytes(proto.string_val[0])


def _dtype_name(value: int) -> str:
    return types_pb2.DataType.Name(value) if value in types_pb2.DataType.values() else str(value)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore) -> None:
        self.core = core

    def _model_spec(self) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.core.model.name, signature_name=SIGNATURE)
        spec.version.value = 1
        return spec

    def _check(self, spec: model_pb2.ModelSpec, context: grpc.ServicerContext) -> None:
        """Key, then the model spec (empty, or naming this model and signature)."""
        auth = dict(context.invocation_metadata()).get("authorization")
        if not self.core.keys.check_bearer(str(auth) if auth is not None else None):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer key")
        if spec.name and spec.name != self.core.model.name:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model {spec.name!r} is not served here (this server serves "
                f"{self.core.model.name!r})",
            )
        if spec.signature_name and spec.signature_name != SIGNATURE:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"model_spec.signature_name: only {SIGNATURE!r} is served",
            )

    def Predict(  # noqa: N802 - the RPC's name
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        self._check(request.model_spec, context)
        try:
            results = self._predict(request)
        except Overloaded as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except Unavailable as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except ServingError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        response = predict_pb2.PredictResponse(model_spec=self._model_spec())
        for name, array in results.items():
            response.outputs[name].CopyFrom(tensor_proto(array))
        return response

    def _predict(self, request: predict_pb2.PredictRequest) -> dict[str, Any]:
        if len(request.inputs) != 1:
            raise InvalidInput(
                f"inputs: expected one input (an encoded image as DT_STRING [1]), got "
                f"{len(request.inputs)}"
            )
        ((name, proto),) = request.inputs.items()
        path = f"inputs[{name!r}]"
        outputs = list(request.output_filter)
        if proto.dtype == types_pb2.DT_STRING:
            return self.core.infer_image(image_bytes(proto, path), outputs)
        if proto.dtype == types_pb2.DT_FLOAT:
            return self.core.infer_tensor(float_tensor(proto, path), outputs)
        raise InvalidInput(
            f"{path}.dtype: {_dtype_name(proto.dtype)} is not accepted; send DT_STRING "
            "(an encoded JPEG/PNG) or DT_FLOAT"
        )

    def GetModelMetadata(  # noqa: N802 - the RPC's name
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        self._check(request.model_spec, context)
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata_field: only ['signature_def'] is served, got {fields}",
            )
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=self._model_spec())
        response.metadata["signature_def"].Pack(self.signatures())
        return response

    def signatures(self) -> get_model_metadata_pb2.SignatureDefMap:
        image = signature_pb2.TensorInfo(
            name=IMAGE_INPUT, dtype=types_pb2.DT_STRING, tensor_shape=_shape([1])
        )
        signature = signature_pb2.SignatureDef(method_name=PREDICT_METHOD)
        signature.inputs[IMAGE_INPUT].CopyFrom(image)
        for spec in self.core.outputs.values():
            signature.outputs[spec.name].CopyFrom(
                signature_pb2.TensorInfo(
                    name=spec.name,
                    dtype=DTYPES[spec.datatype],
                    tensor_shape=_shape(list(spec.shape)),
                )
            )
        result = get_model_metadata_pb2.SignatureDefMap()
        result.signature_def[SIGNATURE].CopyFrom(signature)
        return result


def start_grpc(
    core: ServingCore, host: str, port: int, tls: Tls | None = None
) -> tuple[grpc.Server, int]:
    """Serve on ``host:port`` (0: any free port); returns the server and the bound port.

    At most ``core.limits.admitted`` calls run at once; gRPC answers RESOURCE_EXHAUSTED past that.
    """
    admitted = core.limits.admitted
    max_message = core.limits.max_image_bytes + MESSAGE_ALLOWANCE
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=admitted, thread_name_prefix="grpc-score"),
        maximum_concurrent_rpcs=admitted,
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials([(tls.private_key, tls.cert_chain)])
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    server.start()
    return server, bound


__all__ = ["SCORES", "PredictionService", "Tls", "start_grpc"]
