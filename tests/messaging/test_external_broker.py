"""``--broker mqtt://host:port``: the hub uses a broker somebody else runs."""

from __future__ import annotations

from pathlib import Path

from edgefleet.sdk.device_client import DeviceClient
from tests.support.hub import running_hub
from tests.support.mqtt import create_device, credentials, mosquitto, wait_until


def test_hub_ingests_and_answers_twins_through_an_external_broker(tmp_path: Path) -> None:
    with mosquitto(tmp_path / "ext") as broker:
        with running_hub(tmp_path, broker=f"mqtt://127.0.0.1:{broker.port}") as hub:
            create_device(hub, "ext-dev")
            creds = credentials(hub, "ext-dev")
            assert (creds["port"], creds["tls"]) == (broker.port, False)
            client = DeviceClient.create_from_credentials(creds, outbox_path=tmp_path / "o.db")
            client.connect(20)
            try:
                sent = client.send_message({"via": "external"})
                assert client.patch_twin_reported_properties({"ext": 1}) == 2
                assert client.wait_for_outbox_empty(20)
            finally:
                client.shutdown()

            def stored() -> list[str]:
                with hub.client() as api:
                    body = api.request("GET", "/devices/ext-dev/messages").json()
                return [m["messageId"] for m in body["messages"]]

            assert wait_until(lambda: stored() == [sent])
