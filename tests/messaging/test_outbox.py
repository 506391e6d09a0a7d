"""The device SDK's durable outbox: accepted messages survive a broker outage and a kill -9."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from edgefleet import protocol as p
from edgefleet.sdk.device_client import DeviceClient
from tests.support.mqtt import Mosquitto, free_port, mosquitto, recorder

EVENTS = ["devices/+/messages/events/#"]


def _ids(rec_messages: list[tuple[str, bytes]]) -> set[str]:
    return {p.parse_topic(t).properties[p.SYS_MESSAGE_ID] for t, _ in rec_messages}


def test_messages_sent_during_broker_outage_arrive_after_restart(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "store"
    store.mkdir()
    persist = f"persistence true\npersistence_location {store}/\n"
    with mosquitto(tmp_path / "b1", persist, port=port) as broker:
        # A persistent-session subscriber: the restarted broker keeps queueing for it.
        rec = recorder(port, EVENTS, client_id="rec", clean_session=False)
        assert rec.subscribed.wait(30)
        rec.client.disconnect()
        rec.client.loop_stop()
        client = DeviceClient(
            "dev-out",
            "127.0.0.1",
            port,
            tls=False,
            outbox_path=tmp_path / "o.db",
            backoff_base=0.05,
            backoff_max=0.5,
        )
        client.connect(30)
        sent = [client.send_message({"i": i}) for i in range(50)]
        assert client.wait_for_outbox_empty(20)
        broker.stop()
        sent += [client.send_message({"i": i}) for i in range(50, 250)]
        assert len(client.outbox) == 200
    with mosquitto(tmp_path / "b2", persist, port=port):
        assert client.wait_for_outbox_empty(30)
        rec = recorder(port, EVENTS, client_id="rec", clean_session=False)
        assert rec.wait_for(200, timeout=60)
        client.shutdown()
        rec.client.loop_stop()
        assert set(sent[50:]) <= _ids(rec.messages)


def test_outbox_survives_kill_9_of_the_device_process(tmp_path: Path) -> None:
    port = free_port()
    outbox = tmp_path / "device.db"
    # A device process accepts 300 messages while no broker runs, then is killed with SIGKILL.
    script = textwrap.dedent(
        f"""
        import json, sys
        from edgefleet.sdk.device_client import DeviceClient
        c = DeviceClient("dev-k", "127.0.0.1", {port}, tls=False, outbox_path={str(outbox)!r})
        ids = [c.send_message({{"i": i}}) for i in range(300)]
        print(json.dumps(ids), flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    ids = json.loads(proc.stdout.readline())
    proc.kill()
    proc.wait(10)
    broker: Mosquitto
    with mosquitto(tmp_path / "b", port=port) as broker:
        rec = recorder(broker.port, EVENTS)
        assert rec.subscribed.wait(30)
        client = DeviceClient("dev-k", "127.0.0.1", port, tls=False, outbox_path=outbox)
        client.connect(30)
        assert client.wait_for_outbox_empty(30)
        assert rec.wait_for(300, timeout=60)
        client.shutdown()
        rec.client.loop_stop()
    assert set(ids) == _ids(rec.messages)
    bodies = sorted(json.loads(b)["i"] for _, b in rec.messages)
    assert bodies[:300] == list(range(300)) or set(bodies) == set(range(300))
