"""The store-and-forward queue on disk: order, TTL, byte cap, counters that survive a restart."""

from __future__ import annotations

from pathlib import Path

from edge_agent.edgehub.store_and_forward import Item, MessageStore


def _item(n: int, priority: int = 0, ttl: float = 60.0, size: int = 10) -> Item:
    return Item("m", f"seq={n}", b"x" * size, priority, ttl)


def test_forward_order_is_priority_then_arrival_and_survives_reopen(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.db")
    store.put_many([_item(0, 5), _item(1, 0), _item(2, 5), _item(3, 0)])
    store.close()
    store = MessageStore(tmp_path / "s.db")
    assert [s.bag for s in store.peek(10)] == ["seq=1", "seq=3", "seq=0", "seq=2"]
    store.remove([s.seq for s in store.peek(2)])
    assert store.stats()["forwardedMessages"] == 2
    assert len(store) == 2
    store.close()


def test_expired_messages_are_dropped_and_counted(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.db")
    store.put_many([_item(0, ttl=1), _item(1, ttl=100)], now=1000.0)
    assert store.expire(now=1000.5) == 0
    assert store.expire(now=1001.0) == 1
    assert [s.bag for s in store.peek(10)] == ["seq=1"]
    store.close()
    assert MessageStore(tmp_path / "s.db").stats()["expiredMessages"] == 1


def test_byte_cap_evicts_oldest_first(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.db", max_bytes=100)
    store.put_many([_item(i, size=15) for i in range(10)])  # 20 bytes each with the bag
    stats = store.stats()
    assert stats["queuedBytes"] <= 100
    assert stats["queuedMessages"] == 5 and stats["evictedMessages"] == 5
    assert [s.bag for s in store.peek(10)] == [f"seq={i}" for i in range(5, 10)]
    store.close()


def test_a_message_evicted_while_being_handed_over_counts_as_forwarded(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.db", max_bytes=100)
    store.put_many([_item(i, size=15) for i in range(5)])  # 100 bytes: full, nothing evicted
    handed = store.peek(2)  # the forwarder takes the two oldest ...
    store.put_many([_item(5, size=15)])  # ... a new one evicts the oldest meanwhile ...
    assert store.stats()["evictedMessages"] == 1
    store.remove([s.seq for s in handed])  # ... and the hand-over completes: both delivered
    stats = store.stats()
    assert (stats["forwardedMessages"], stats["evictedMessages"]) == (2, 0)
    assert [s.bag for s in store.peek(10)] == ["seq=2", "seq=3", "seq=4", "seq=5"]
    store.close()
    reopened = MessageStore(tmp_path / "s.db").stats()  # the counters on disk agree
    assert (reopened["forwardedMessages"], reopened["evictedMessages"]) == (2, 0)
