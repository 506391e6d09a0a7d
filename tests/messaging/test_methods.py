"""Direct-method dispatch shared by the device and module clients."""

from __future__ import annotations

import json
import logging

from edgefleet import protocol as p
from edgefleet.sdk import methods
from edgefleet.sdk.methods import MethodRequest, MethodResponse

log = logging.getLogger("test.methods")


def test_request_payload_is_json_else_text_else_none() -> None:
    assert methods.decode_request("1", "m", b'{"a": 1}', None).payload == {"a": 1}
    assert methods.decode_request("1", "m", b"not json", "mod").payload == "not json"
    empty = methods.decode_request("7", "reboot", b"", "mod")
    assert empty == MethodRequest("7", "reboot", None, "mod")


def test_answer_without_handler_is_501_and_a_raising_handler_is_500() -> None:
    request = MethodRequest("r1", "reboot", None, "mod")
    missing = methods.answer(None, request, log)
    assert missing == MethodResponse(
        "r1", 501, {"message": "method 'reboot' not implemented"}, "mod"
    )

    def broken(_req: MethodRequest) -> MethodResponse:
        raise RuntimeError("disk full")

    assert methods.answer(broken, request, log) == MethodResponse(
        "r1", 500, {"message": "disk full"}, "mod"
    )
    assert methods.answer(lambda _req: None, request, log) is None  # answers later itself
    ok = methods.answer(
        lambda req: MethodResponse.create_from_method_request(req, 200, {"done": True}),
        request,
        log,
    )
    assert ok == MethodResponse("r1", 200, {"done": True}, "mod")


def test_response_goes_to_the_method_response_topic_as_json() -> None:
    response = MethodResponse("r9", 201, {"x": [1]}, "mod")
    topic, body = methods.encode_response("dev1", "mod", response)
    assert topic == p.method_response_topic("dev1", 201, "r9", "mod")
    assert json.loads(body) == {"x": [1]}
