"""The edge hub's store and the upstream outbox on a full disk (a small tmpfs the test mounts;
root): what is stored stays readable, new writes fail cleanly and work again once there is
space, and a module is told why its message was refused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from composition.chaos.agents import fill
from edge_agent.edgehub.store_and_forward import Item, MessageStore
from edgefleet import module_topics as t
from edgefleet.diskfull import is_disk_full
from edgefleet.sdk.module_client import Message, MessageRefusedError
from edgefleet.sdk.outbox import Outbox
from tests.support.edgehub import DEVICE, edge_hub, module, upstream_link
from tests.support.tmpfs import small_tmpfs

UPSTREAM = {"routes": {"up": "FROM /messages/* INTO $upstream"}}


def _item(n: int) -> Item:
    return Item("m", f"seq={n}", b"x" * 200, 0, 600)


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_store_opens_on_a_full_disk_keeps_what_it_has_and_resumes(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        store = MessageStore(disk / "store.db")
        store.put_many([_item(n) for n in range(50)])
        store.close()  # a clean stop: SQLite removes its WAL index, which must grow on open
        fill(disk)
        filler = disk / "filler"
        store = MessageStore(disk / "store.db")
        assert [s.bag for s in store.peek(3)] == ["seq=0", "seq=1", "seq=2"]
        with pytest.raises(sqlite3.Error) as refused:
            for n in range(50, 2000):  # whatever room the WAL had runs out
                store.put_many([_item(n)])
        assert is_disk_full(refused.value)
        stored = len(store)
        assert store.stats()["receivedMessages"] == stored  # the failed commit left no trace
        assert [s.bag for s in store.peek(1)] == ["seq=0"]
        filler.unlink()
        store.put_many([_item(9999)])
        assert len(store) == stored + 1
        store.close()
        assert _integrity(disk / "store.db") == "ok"


def test_a_new_store_on_a_full_disk_is_created_by_the_first_write_with_space(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        fill(disk)
        filler = disk / "filler"
        store = MessageStore(disk / "store.db")
        assert store.peek(10) == [] and store.stats()["queuedMessages"] == 0
        with pytest.raises(sqlite3.Error) as refused:
            store.put_many([_item(0)])
        assert is_disk_full(refused.value)
        filler.unlink()
        store.put_many([_item(1)])
        assert [s.bag for s in store.peek(10)] == ["seq=1"]
        store.close()


def test_outbox_on_a_full_disk_sends_what_it_has_and_removes_once_there_is_space(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        box = Outbox(disk / "outbox.db")
        box.put_many([(f"t/{n}", b"y" * 500) for n in range(100)])
        box.close()
        fill(disk)
        filler = disk / "filler"
        box = Outbox(disk / "outbox.db")
        rows = box.after(0, 1000)
        assert len(rows) == 100
        with pytest.raises(sqlite3.Error):
            for n in range(100, 5000):
                box.put(f"t/{n}", b"y" * 500)
        try:  # a delete may still fit in the WAL; if not, nothing is left half done
            box.remove([rows[0][0]])
        except sqlite3.Error as exc:
            assert is_disk_full(exc)
        filler.unlink()
        box.remove([seq for seq, _, _ in rows])
        box.put("t/after", b"z")
        assert [topic for _, topic, _ in box.after(0, 1000)][-1] == "t/after"
        assert all(topic not in {r[1] for r in rows} for _, topic, _ in box.after(0, 1000))
        box.close()


def test_edge_hub_refuses_with_a_reason_and_accepts_again_when_space_returns(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "edgehub", "2m") as disk, edge_hub(tmp_path, None, UPSTREAM) as hub:
        a = module(hub, "a")
        try:
            a.send_message_to_output(Message(b"before"), "o")
            fill(disk)
            filler = disk / "filler"
            with pytest.raises(MessageRefusedError) as refused:
                for n in range(5000):  # the WAL's spare room runs out
                    a.send_message_to_output(Message(b"z" * 1000, message_id=f"m{n}"), "o")
            assert refused.value.status == 507
            assert "storage is full" in str(refused.value)
            assert refused.value.message_ids == [f"m{n}"]
            assert not _plain_client_acknowledged(hub.module_env("p"))
            assert hub.stats()["refusedMessages"] >= 2
            filler.unlink()
            a.send_message_to_output(Message(b"after", message_id=f"m{n}"), "o")
            bodies = [s.payload for s in hub.store.peek(10_000)]
            assert bodies[0] == b"before" and bodies[-1] == b"after"
        finally:
            a.shutdown()


def _plain_client_acknowledged(env: dict[str, str]) -> bool:
    """A plain MQTT 3.1.1 client (no refusal subscription) publishes QoS 1: True if PUBACKed.
    Refused, it gets no PUBACK and its connection is closed."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv311)
    client.username_pw_set(env["IOTEDGE_MODULEID"], env["IOTEDGE_MODULEKEY"])
    dropped = threading.Event()
    client.on_disconnect = lambda *_args: dropped.set()
    client.connect("127.0.0.1", int(env["IOTEDGE_EDGEHUBPORT"]))
    client.loop_start()
    try:
        info = client.publish(t.output_topic(DEVICE, "p", "o", {"$.mid": "p1"}), b"x", qos=1)
        assert dropped.wait(30), "the edge hub kept the connection of a refused publish"
        return info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_new_device_whose_disk_is_full_before_its_first_start_refuses_then_forwards(
    tmp_path: Path,
) -> None:
    """No store and no upstream outbox yet, and no room to create them: the edge hub and its
    upstream client start anyway, refuse with 507, and work once there is space."""
    with (
        upstream_link(tmp_path) as up,
        small_tmpfs(tmp_path / "edgehub", "1m") as disk,
    ):
        fill(disk)
        with edge_hub(tmp_path, up, UPSTREAM) as hub:
            a = module(hub, "a")
            try:
                with pytest.raises(MessageRefusedError) as refused:
                    a.send_message_to_output(Message(b"full", message_id="m-full"), "o")
                assert refused.value.status == 507 and "storage is full" in str(refused.value)
                assert hub.stats()["queuedMessages"] == 0
                (disk / "filler").unlink()
                a.send_message_to_output(Message(b"retried", message_id="m-full"), "o")
                a.send_message_to_output(Message(b"after", message_id="m-after"), "o")
                assert up.wait_ids({"m-full", "m-after"}) >= {"m-full", "m-after"}
            finally:
                a.shutdown()
