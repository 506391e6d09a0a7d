"""The dashboard over HTTP in-process (SQLite and PostgreSQL): sign-in and its cookie, one-time
sign-in links, CSRF and scope checks on writes, fleet counts and keyset paging."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloud_hub.app import create_app
from cloud_hub.hub import Hub
from cloud_hub.ui.fleet_data import PAGE_SIZE, count_fleet
from cloud_hub.ui.web import UiState
from tests.hub.conftest import hub, pg_url  # noqa: F401  (the same database fixtures)


@pytest.fixture
def app_client(hub: Hub) -> Iterator[TestClient]:  # noqa: F811
    client = TestClient(create_app(hub=hub))  # lifespan not run: no broker, no worker thread
    yield client
    client.close()


def sign_in(client: TestClient, token: str) -> str:
    """Sign in and return the session's CSRF token."""
    answer = client.post("/ui/login", data={"token": token}, follow_redirects=False)
    assert answer.status_code == 303
    page = client.get("/ui").text
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    return found.group(1)


def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it(
    hub: Hub,  # noqa: F811
    app_client: TestClient,
) -> None:
    assert app_client.get("/ui", follow_redirects=False).headers["location"].startswith("/ui/login")
    token = hub.tokens.create(["admin"])
    forged = app_client.post(
        "/ui/login", data={"token": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert forged.status_code == 403 and "edgefleet_ui" not in forged.headers.get("set-cookie", "")
    bad = app_client.post("/ui/login", data={"token": "efh_nope"}, follow_redirects=False)
    assert bad.status_code == 401 and "unknown token" in bad.text
    answer = app_client.post(
        "/ui/login", data={"token": token, "next": "//evil.example/x"}, follow_redirects=False
    )
    assert answer.headers["location"] == "/ui"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and token not in cookie
    fragment = app_client.get("/ui", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "counts" in fragment.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', app_client.get("/ui").text)
    assert csrf
    assert app_client.post("/ui/logout", data={}, follow_redirects=False).status_code == 403
    out = app_client.post("/ui/logout", data={"csrf": csrf.group(1)}, follow_redirects=False)
    assert out.status_code == 303
    assert app_client.get("/ui", follow_redirects=False).status_code == 303
    assert app_client.get("/ui", headers={"HX-Request": "true"}).status_code == 401


def test_one_time_sign_in_link(hub: Hub, app_client: TestClient) -> None:  # noqa: F811
    assert app_client.post("/ui/login-codes").status_code == 401
    reader = hub.tokens.create(["registry:read"])
    answer = app_client.post("/ui/login-codes", headers={"Authorization": f"Bearer {reader}"})
    assert answer.status_code == 201
    link = answer.json()["path"]
    assert reader not in link
    first = app_client.get(link, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/ui"
    assert app_client.get("/ui").status_code == 200
    app_client.cookies.clear()
    again = app_client.get(link, follow_redirects=False)
    assert again.status_code == 401
    state: UiState = hub.extensions["ui"]
    assert state.codes.redeem("made-up") is None


def test_writes_need_the_csrf_token_and_the_scope(hub: Hub, app_client: TestClient) -> None:  # noqa: F811
    hub.registry.create_device("d1")
    reader = TestClient(app_client.app)
    reader_csrf = sign_in(reader, hub.tokens.create(["registry:read"]))
    page = reader.get("/ui/devices/d1").text
    assert "twin-form" not in page and "Rotate" not in page
    form = {"csrf": reader_csrf, "etag": "*", "document": '{"tags": {"a": 1}}'}
    assert reader.post("/ui/devices/d1/twin", data=form).status_code == 403
    rotate = {"csrf": reader_csrf, "which": "primary"}
    assert reader.post("/ui/devices/d1/rotate", data=rotate).status_code == 403

    writer_csrf = sign_in(app_client, hub.tokens.create(["registry:write"]))
    keys = hub.registry.get_device("d1")["authentication"]["symmetricKey"]
    no_csrf = app_client.post("/ui/devices/d1/rotate", data={"which": "primary"})
    assert no_csrf.status_code == 403
    header = app_client.post(
        "/ui/devices/d1/rotate",
        data={"which": "primary"},
        headers={"X-CSRF-Token": writer_csrf},
        follow_redirects=False,
    )
    assert header.status_code == 303
    assert hub.registry.get_device("d1")["authentication"]["symmetricKey"] != keys
    # the CSRF token of another session does not do
    assert app_client.post("/ui/devices/d1/rotate", data=rotate).status_code == 403
    # registry:write is not deploy
    deploy = app_client.post("/ui/deployments/check", data={"csrf": writer_csrf})
    assert deploy.status_code == 403
    bad_json = app_client.post(
        "/ui/devices/d1/twin", data={"csrf": writer_csrf, "etag": "*", "document": "{"}
    )
    assert bad_json.status_code == 400 and "not JSON" in bad_json.text
    bad_key = app_client.post(
        "/ui/devices/d1/twin",
        data={"csrf": writer_csrf, "etag": "*", "document": '{"reported": {}}'},
    )
    assert bad_key.status_code == 400 and "(at reported)" in bad_key.text


def test_fleet_counts_and_keyset_pages(hub: Hub, app_client: TestClient) -> None:  # noqa: F811
    total = PAGE_SIZE * 2 + 5
    hub.registry.create_devices(
        [
            (f"dev-{i:04d}", {"capabilities": {"iotEdge": i % 2 == 0}}, {"n": i})
            for i in range(total)
        ]
    )
    hub.registry.set_connection_state("dev-0001", True)
    hub.twins.patch_reported(
        "dev-0002", "$edgeAgent", {"modules": {"cam": {"runtimeStatus": "backoff"}}}
    )
    hub.twins.patch_reported(
        "dev-0004", "$edgeAgent", {"modules": {"cam": {"runtimeStatus": "running"}}}
    )
    counts = count_fleet(hub.db)
    assert (counts.devices, counts.online, counts.offline) == (total, 1, total - 1)
    assert (counts.edge, counts.failed_module_devices) == ((total + 1) // 2, 1)

    sign_in(app_client, hub.tokens.create(["registry:read"]))
    seen: list[str] = []
    url = "/ui"
    while True:
        page = app_client.get(url).text
        seen += re.findall(r'<tr data-device="([^"]+)"', page)
        found = re.search(r'href="([^"]+)" rel="next"', page)
        if not found:
            break
        url = found.group(1).replace("&amp;", "&")
    assert seen == [f"dev-{i:04d}" for i in range(total)]
    filtered = app_client.get("/ui", params={"q": "tags.n >= 100"}).text
    assert re.findall(r'<tr data-device="([^"]+)"', filtered) == [
        f"dev-{i:04d}" for i in range(100, total)
    ]
    assert 'rel="prev"' not in filtered
