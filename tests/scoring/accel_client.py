"""Runs Azure ML's real ``PredictionClient`` (azureml-accel-models) in its own virtualenv.

Not a test module: ``test_tfserving_client.py`` runs it with the venv's Python. Reads a JSON list
of calls on stdin, prints one JSON list of results. Calls:
  {"call": "score_file", "address", "port", "use_ssl", "key", "service", "path"}
  {"call": "metadata", "address", "port", "key"}   (tensorflow-serving-api's own stub)
A client that gets an error other than INVALID_ARGUMENT retries with 1, 2, 4, 8 s sleeps; those
sleeps are counted, not slept, so a refused call answers at once.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import grpc
from azureml.accel import PredictionClient

SLEEPS: list[float] = []


def _no_sleep(seconds: float) -> None:
    SLEEPS.append(seconds)


def score_file(call: dict[str, Any]) -> dict[str, Any]:
    import azureml.accel._client as client_module

    client_module.time.sleep = _no_sleep
    client = PredictionClient(
        call["address"], call["port"], call["use_ssl"], call["key"], call["service"]
    )
    result = client.score_file(call["path"])
    order = result.argsort()[::-1][:5]
    return {
        "shape": list(result.shape),
        "dtype": str(result.dtype),
        "top5": [int(i) for i in order],
        "sum": float(result.sum()),
    }


def metadata(call: dict[str, Any]) -> dict[str, Any]:
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        prediction_service_pb2_grpc,
    )

    channel = grpc.insecure_channel(f"{call['address']}:{call['port']}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    response = stub.GetModelMetadata(
        request, timeout=10, metadata=[("authorization", f"Bearer {call['key']}")]
    )
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]

    def info(tensors: Any) -> dict[str, Any]:
        return {
            name: {"dtype": t.dtype, "shape": [d.size for d in t.tensor_shape.dim]}
            for name, t in tensors.items()
        }

    return {
        "model": response.model_spec.name,
        "inputs": info(signature.inputs),
        "outputs": info(signature.outputs),
        "method": signature.method_name,
    }


def main() -> None:
    results = []
    for call in json.load(sys.stdin):
        SLEEPS.clear()
        start = time.monotonic()
        try:
            result = {"ok": True, **globals()[call["call"]](call)}
        except grpc.RpcError as exc:
            result = {"ok": False, "code": exc.code().name, "details": exc.details()}
        result["retry_sleeps"] = list(SLEEPS)
        result["seconds"] = round(time.monotonic() - start, 3)
        results.append(result)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
