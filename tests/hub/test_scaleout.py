"""Two hub processes sharing one PostgreSQL database (the scale-out setup)."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.support.hub import running_hub
from tests.support.pg import temporary_database


def test_two_hubs_share_a_postgresql_database(tmp_path: Path) -> None:
    with (
        temporary_database() as url,
        running_hub(tmp_path / "a", database_url=url) as hub_a,
        running_hub(tmp_path / "b", database_url=url) as hub_b,
    ):
        client_a, client_b = hub_a.client(), hub_b.client()
        client_a.create_device("shared")
        assert client_b.get_device("shared")["deviceId"] == "shared"

        def patch(client_name: str) -> None:
            client = hub_a.client() if client_name == "a" else hub_b.client()
            with client:
                for i in range(10):
                    client.patch_twin(
                        "shared", {"properties": {"desired": {f"{client_name}{i}": i}}}
                    )

        threads = [threading.Thread(target=patch, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        desired = client_b.get_twin("shared")["properties"]["desired"]
        assert len([k for k in desired if not k.startswith("$")]) == 20
        assert desired["$version"] == 21
        client_a.close()
        client_b.close()
