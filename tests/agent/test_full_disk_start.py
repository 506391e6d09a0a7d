"""What an agent writes at start-up, on a full disk (a small tmpfs; root): the hub's CA is not
rewritten when unchanged and comes from a temporary file when it cannot be written; the device
client's outbox retries deleting what the broker acknowledged."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from composition.chaos.agents import fill
from edge_agent.config import AgentConfig, HubConfig
from edge_agent.hub_twin_channel import _ca_file
from edgefleet.sdk.outbox_sender import OutboxSender
from tests.support.tmpfs import small_tmpfs

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def test_hub_ca_is_kept_when_unchanged_and_taken_from_a_temporary_file_when_full(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "data", "1m") as data:
        conn = "HostName=h;DeviceId=d;SharedAccessKey=a2V5"
        cfg = AgentConfig.model_validate(
            {
                "provisioning": {"source": "manual", "connection_string": conn},
                "data_dir": str(data),
                "hub": {"ca_cert": PEM},
            }
        )
        assert _ca_file(cfg) == data / "hub-ca.pem"
        fill(data)
        assert _ca_file(cfg) == data / "hub-ca.pem"  # the same CA: nothing to write
        changed = PEM.replace("fake", "new")
        path = _ca_file(cfg.model_copy(update={"hub": HubConfig(ca_cert=changed)}))
        assert path is not None and path.parent != data and path.read_text() == changed
        assert (data / "hub-ca.pem").read_text() == PEM  # the old file is intact
        path.unlink()


class FlakyOutbox:
    """Deletes fail while ``full``."""

    def __init__(self) -> None:
        self.full = True
        self.removed: list[int] = []

    def remove(self, seqs: list[int]) -> None:
        if self.full:
            raise OSError(28, "No space left on device")
        self.removed += seqs


def test_acknowledged_rows_are_deleted_once_the_disk_has_space() -> None:
    outbox = FlakyOutbox()
    sender = OutboxSender(outbox, link=SimpleNamespace(), max_inflight=10)  # type: ignore[arg-type]
    acked: Any = SimpleNamespace(rc=0, _published=True)
    sender._inflight = [(1, acked), (2, acked)]
    sender.flush_acked()
    assert outbox.removed == [] and sender._inflight == []
    outbox.full = False
    sender.flush_acked()
    assert outbox.removed == [1, 2]
