"""A module process for edge hub tests: sends numbered messages on an output at a fixed rate.

    python -m tests.support.edgehub_module OUTPUT COUNT RATE ACKED_FILE

Uses the environment the edge hub gave the module (``ModuleClient.create_from_environment``).
Message ``i`` has id ``{module}-{i}`` and property ``seq=i``; it is retried until acknowledged
(the hub may be killed meanwhile); every acknowledged seq is appended to ACKED_FILE.
"""

from __future__ import annotations

import sys
import time

from edgefleet.sdk.module_client import ClientError, Message, ModuleClient


def main() -> int:
    output, count, rate, acked_path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    client = ModuleClient.create_from_environment()
    client.connect(timeout=60)
    module = client.module_id
    start = time.monotonic()
    with open(acked_path, "a", buffering=1) as acked:
        for i in range(count):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            msg = Message.from_body({"seq": i}, message_id=f"{module}-{i}")
            msg.custom_properties["seq"] = str(i)
            while True:
                try:
                    client.send_message_to_output(msg, output, timeout=5)
                    break
                except ClientError:
                    time.sleep(0.1)
            acked.write(f"{i}\n")
    client.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
