"""A hub stops promptly while dashboards hold event streams open."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from tests.support.hub import running_hub, stop_process


def test_open_dashboard_streams_end_when_the_hub_stops(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        http = httpx.Client(base_url=hub.url, timeout=30)
        assert http.post("/ui/login", data={"token": hub.token}).status_code == 303
        opened = threading.Event()
        ended: list[str] = []

        def hold(path: str) -> None:
            with http.stream("GET", path) as answer:
                assert answer.headers["content-type"].startswith("text/event-stream")
                opened.set()
                for _line in answer.iter_lines():
                    pass
            ended.append(path)

        reader = threading.Thread(target=hold, args=("/ui/fleet/stream",), daemon=True)
        reader.start()
        assert opened.wait(30)
        assert stop_process(hub.process) == 0
        reader.join(30)
        http.close()
        log = hub.log()
    assert ended == ["/ui/fleet/stream"]
    assert "timeout graceful shutdown exceeded" not in log
