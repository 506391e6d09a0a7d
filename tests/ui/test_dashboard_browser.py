"""The dashboard in a real headless Chromium against a real hub process (embedded MQTT broker),
devices created through the REST API and real device connections (the device SDK over MQTT), and
real edge agents (``edgefleet agent run``, process runtime) for deployments and modules.

Screenshots of each page land under the test's tmp_path; with EDGEFLEET_UPDATE_SCREENSHOTS=1
they are also copied to docs/images/ (what docs/dashboard.md shows).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from edgefleet.manifest import edge_deployment, process_module
from tests.deployments.test_fleet_e2e import content, module, put_configuration
from tests.support.agent import AgentProcess, hub_agent
from tests.support.browser import chromium, screenshot, wait_for
from tests.support.hub import RunningHub, create_token, running_hub
from tests.support.mqtt import create_device, device_client

ROOT = Path(__file__).resolve().parents[2]
DOCS_IMAGES = ROOT / "docs" / "images" if os.environ.get("EDGEFLEET_UPDATE_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with running_hub(tmp_path_factory.mktemp("ui-hub"), metrics_interval=1) as running:
        yield running


@pytest.fixture(scope="module")
def browser(hub: RunningHub) -> Iterator[Any]:
    with chromium() as driver:
        sign_in(driver, hub, hub.token)
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def sign_in(driver: Any, hub: RunningHub, token: str) -> None:
    driver.delete_all_cookies()
    driver.get(hub.url + "/ui")
    wait_for(driver, lambda d: "/ui/login" in d.current_url)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button[type=submit]").click()
    wait_for(driver, lambda d: d.find_elements(By.ID, "sign-out"))


def row_state(driver: Any, device_id: str) -> str:
    cells = driver.find_elements(By.CSS_SELECTOR, f"tr[data-device='{device_id}'] .state")
    return str(cells[0].get_attribute("data-state")) if cells else ""


def session_http(hub: RunningHub, driver: Any) -> httpx.Client:
    """An HTTP client holding the browser's session cookie (to send requests the UI never does)."""
    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    return httpx.Client(base_url=hub.url, cookies=cookies, follow_redirects=False, timeout=30)


def fill_deployment_form(driver: Any, manifest: Path, target: str, priority: int) -> None:
    """Load a manifest file (it adds a module ``mon``) into the new-deployment form and set
    the target condition and priority."""
    driver.find_element(By.ID, "dep-file").send_keys(str(manifest))
    wait_for(
        driver, lambda d: "mon" in d.find_element(By.ID, "dep-manifest").get_attribute("value")
    )
    driver.find_element(By.ID, "dep-target").send_keys(target)
    field = driver.find_element(By.ID, "dep-priority")
    field.clear()
    field.send_keys(str(priority))


def test_sign_in_fleet_states_live_offline(
    hub: RunningHub, browser: Any, shots: Path, tmp_path: Path
) -> None:
    browser.get(hub.url + "/ui/login")
    screenshot(browser, shots, "login", DOCS_IMAGES)
    create_device(hub, "cam-1", {"capabilities": {"iotEdge": True}})
    create_device(hub, "sensor-1")
    with hub.client() as api:
        api.request("PATCH", "/twins/cam-1", json={"tags": {"site": "plant-3", "role": "camera"}})
    sensor = device_client(hub, "sensor-1", tmp_path)
    sensor.connect(20)
    try:
        sign_in(browser, hub, hub.token)
        assert browser.current_url.rstrip("/").endswith("/ui")
        wait_for(browser, lambda d: row_state(d, "sensor-1") == "online")
        assert row_state(browser, "cam-1") == "offline"
        cam_row = browser.find_element(By.CSS_SELECTOR, "tr[data-device='cam-1']").text
        assert "site=plant-3" in cam_row and "edge" in cam_row
        assert browser.find_element(By.ID, "count-online").text == "1"
        screenshot(browser, shots, "fleet", DOCS_IMAGES)
        browser.execute_script("window.__notReloaded = true")
        sensor.shutdown()
        wait_for(browser, lambda d: row_state(d, "sensor-1") == "offline")
        assert browser.execute_script("return window.__notReloaded === true")
        wait_for(browser, lambda d: d.find_element(By.ID, "count-online").text == "0")
    finally:
        sensor.shutdown()

    # the filter box speaks the query language and points at a mistake
    field = browser.find_element(By.ID, "q")
    field.send_keys("tags.site = ")
    field.submit()
    error = wait_for(browser, lambda d: d.find_elements(By.ID, "filter-error"))[0].text
    assert "column 12" in error
    field = browser.find_element(By.ID, "q")
    field.clear()
    field.send_keys("tags.role = 'camera'")
    field.submit()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-device='cam-1']"))
    assert not browser.find_elements(By.CSS_SELECTOR, "tr[data-device='sensor-1']")


def test_edit_desired_lands_in_twin_and_device(
    hub: RunningHub, browser: Any, shots: Path, tmp_path: Path
) -> None:
    create_device(hub, "thermo-1")
    got: list[dict[str, Any]] = []
    arrived = threading.Event()

    def on_patch(patch: dict[str, Any]) -> None:
        got.append(patch)
        arrived.set()

    device = device_client(hub, "thermo-1", tmp_path)
    device.on_twin_desired_properties_patch_received = on_patch
    device.connect(20)
    try:
        device.patch_twin_reported_properties({"firmware": "1.2.0", "temperature": 21.5})
        browser.get(hub.url + "/ui/devices/thermo-1")
        wait_for(browser, lambda d: d.find_element(By.ID, "device-state").text == "online")
        area = wait_for(browser, lambda d: d.find_element(By.ID, "twin-doc"))
        # client-side check: not JSON, nothing sent
        browser.execute_script("arguments[0].value = '{\"tags\": '", area)
        browser.find_element(By.ID, "save-twin").click()
        error = browser.find_element(By.CSS_SELECTOR, "#twin-form .json-error")
        assert error.is_displayed() and "Not valid JSON" in error.text
        doc = {"tags": {"site": "lab"}, "properties": {"desired": {"interval": 5}}}
        browser.execute_script("arguments[0].value = arguments[1]", area, json.dumps(doc))
        browser.find_element(By.ID, "save-twin").click()
        wait_for(browser, lambda d: "saved=twin" in d.current_url)
        with hub.client() as api:
            twin = api.request("GET", "/twins/thermo-1").json()
        assert twin["properties"]["desired"]["interval"] == 5
        assert twin["tags"] == {"site": "lab"}
        assert arrived.wait(20) and got[-1].get("interval") == 5
        page = browser.find_element(By.ID, "main").text
        assert "firmware" in page and "interval" in page
        screenshot(browser, shots, "device", DOCS_IMAGES)

        # a twin changed by someone else meanwhile: 412, shown as such
        with hub.client() as api:
            api.request("PATCH", "/twins/thermo-1", json={"properties": {"desired": {"x": 1}}})
        area = browser.find_element(By.ID, "twin-doc")
        browser.execute_script("arguments[0].value = arguments[1]", area, json.dumps(doc))
        browser.find_element(By.ID, "save-twin").click()
        stale = wait_for(browser, lambda d: d.find_elements(By.ID, "twin-error"))[0].text
        assert "changed meanwhile" in stale
        browser.execute_script("window.__before = true")
        browser.find_element(By.ID, "save-twin").click()  # again, without reloading
        wait_for(browser, lambda d: d.execute_script("return window.__before !== true"))
        assert "changed meanwhile" in browser.find_element(By.ID, "twin-error").text
        with hub.client() as api:
            assert api.request("GET", "/twins/thermo-1").json()["properties"]["desired"]["x"] == 1
    finally:
        device.shutdown()


def test_deployments_layered_from_file_metrics_and_rollout_control(
    hub: RunningHub, browser: Any, shots: Path, tmp_path: Path
) -> None:
    for name in ("edge-a", "edge-b", "edge-c"):
        create_device(hub, name, {"capabilities": {"iotEdge": True}})
        with hub.client() as api:
            api.request("PATCH", f"/twins/{name}", json={"tags": {"ring": "canary"}})
    base = edge_deployment({"app": process_module("sleep 600")})
    body = {
        "id": "base-v1",
        "content": base,
        "targetCondition": "tags.ring = 'canary'",
        "priority": 10,
        "rollout": {"batches": ["1", "100%"], "healthTimeoutSecs": 3600, "onAbort": "rollback"},
    }
    with hub.client() as api:
        assert api.request("PUT", "/configurations/base-v1", json=body).status_code == 201

    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps({"modulesContent": {"$edgeAgent": {"properties.desired": {}}}}))
    layer = tmp_path / "monitor.json"
    layer.write_text(
        json.dumps(
            {
                "modulesContent": {
                    "$edgeAgent": {"properties.desired.modules.mon": process_module("sleep 600")}
                }
            }
        )
    )
    browser.get(hub.url + "/ui/deployments/new")
    browser.find_element(By.ID, "dep-id").send_keys("monitor")
    browser.find_element(By.ID, "dep-file").send_keys(str(bad))
    wait_for(browser, lambda d: d.find_element(By.ID, "dep-manifest").get_attribute("value"))
    browser.find_element(By.ID, "check-deployment").click()
    problems = wait_for(browser, lambda d: d.find_elements(By.ID, "problem-list"))[0].text
    assert "modulesContent.$edgeAgent.properties.desired" in problems
    screenshot(browser, shots, "deployment-new", DOCS_IMAGES)

    fill_deployment_form(browser, layer, "tags.ring = 'canary'", 20)
    browser.find_element(By.ID, "dep-metrics").send_keys(
        "canary=SELECT deviceId FROM devices WHERE tags.ring = 'canary'"
    )
    browser.find_element(By.ID, "check-deployment").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "check-ok"))
    browser.find_element(By.ID, "create-deployment").click()
    wait_for(browser, lambda d: d.current_url.endswith("/ui/deployments/monitor"))
    wait_for(browser, lambda d: d.find_element(By.ID, "metric-targeted").text.endswith("3 / 3"))
    wait_for(browser, lambda d: d.find_element(By.ID, "custom-canary").text.endswith("3 / 3"))
    with hub.client() as api:
        created = api.request("GET", "/configurations/monitor").json()
    assert created["priority"] == 20 and created["targetCondition"] == "tags.ring = 'canary'"

    browser.get(hub.url + "/ui/deployments")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-config='monitor']"))
    screenshot(browser, shots, "deployments", DOCS_IMAGES)

    browser.get(hub.url + "/ui/deployments/base-v1")
    wait_for(browser, lambda d: d.find_element(By.ID, "rollout-state").text == "inProgress")
    wait_for(browser, lambda d: d.find_elements(By.ID, "batch-1"))
    screenshot(browser, shots, "deployment", DOCS_IMAGES)
    browser.find_element(By.ID, "rollout-pause").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "rollout-state").text == "paused")
    browser.execute_script("window.confirm = function () { return true; }")
    browser.find_element(By.ID, "rollout-abort").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "rollout-state").text == "rolledBack")
    with hub.client() as api:
        status = api.request("GET", "/configurations/base-v1").json()["rolloutStatus"]
    assert status["state"] == "rolledBack"


def test_live_results_stream(hub: RunningHub, browser: Any, shots: Path, tmp_path: Path) -> None:
    create_device(hub, "scorer-1")
    device = device_client(hub, "scorer-1", tmp_path)
    device.connect(20)
    try:
        browser.get(hub.url + "/ui/devices/scorer-1/live")
        wait_for(browser, lambda d: d.find_element(By.ID, "live-status").text == "live")
        for temperature in (20.5, 21.0, 22.5):
            device.send_message({"machine": {"temperature": temperature}})
        top5 = [{"class_id": 282, "label": "tiger cat", "score": 0.62}]
        top5.append({"class_id": 281, "label": "tabby", "score": 0.21})
        device.send_message({"frame": "chelsea", "model": "efficientnet-lite0", "top5": top5})
        wait_for(browser, lambda d: d.find_element(By.ID, "msg-count").text == "4")
        classes = browser.find_element(By.ID, "top-classes").text
        assert classes.index("tiger cat") < classes.index("tabby")
        assert browser.find_element(By.ID, "chart-field").get_attribute("value") == (
            "machine.temperature"
        )
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart canvas"))
        # a camera thumbnail (a JPEG message, as the camera module sends them) is shown
        from edgefleet.protocol import Message
        from modules.camera.frames import jpeg_frame

        thumbnail = Message(data=jpeg_frame("chelsea", quality=40), content_type="image/jpeg")
        thumbnail.custom_properties.update({"label": "tiger cat", "score": "0.6200"})
        device.send_message(thumbnail)
        wait_for(browser, lambda d: d.find_element(By.ID, "thumbnail").get_attribute("src"))
        image = browser.find_element(By.ID, "thumbnail")
        assert image.get_attribute("src").startswith("data:image/jpeg;base64,/9j/")
        assert browser.execute_script("return arguments[0].naturalWidth", image) == 451
        assert "tiger cat" in browser.find_element(By.ID, "thumb-caption").text
        screenshot(browser, shots, "live", DOCS_IMAGES)
    finally:
        device.shutdown()


def module_cell(driver: Any, module: str) -> str:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#modules-table tr[data-module='{module}']")
    return str(rows[0].text) if rows else ""


def test_edge_modules_live_restart_and_direct_method(
    hub: RunningHub, browser: Any, shots: Path, tmp_path: Path
) -> None:
    from edgefleet.sdk.device_client import MethodRequest, MethodResponse

    create_device(hub, "edge-live", {"capabilities": {"iotEdge": True}})
    calls: list[tuple[str, Any]] = []

    def answer(req: MethodRequest) -> MethodResponse:
        calls.append((req.name, req.payload))
        if req.name == "getModuleLogs":  # IoT Edge's answer: a line more at every call
            lines = sum(1 for name, _ in calls if name == "getModuleLogs")
            records = [
                {"timestamp": "2026-01-01T00:00:00Z", "stream": "stdout", "content": f"line {n}"}
                for n in range(1, lines + 1)
            ]
            return MethodResponse.create_from_method_request(
                req, 200, [{"id": "app", "payload": records}]
            )
        return MethodResponse.create_from_method_request(req, 200, {"ok": req.name})

    device = device_client(hub, "edge-live", tmp_path)
    agent = device.module("$edgeAgent")
    agent.on_method_request_received = answer
    device.on_method_request_received = answer
    device.connect(20)
    running = {
        "runtimeStatus": "running",
        "exitCode": 0,
        "restartCount": 0,
        "lastStartTimeUtc": "2026-01-01T00:00:00Z",
        "settings": {"image": "example/app:1"},
        "version": "1.0",
    }
    try:
        agent.patch_twin_reported_properties({"modules": {"app": running}})
        browser.get(hub.url + "/ui/devices/edge-live")
        wait_for(browser, lambda d: "running" in module_cell(d, "app"))
        browser.execute_script("window.__notReloaded = true")
        failed = {**running, "runtimeStatus": "failed", "exitCode": 3, "restartCount": 2}
        agent.patch_twin_reported_properties({"modules": {"app": failed}})
        wait_for(browser, lambda d: "failed" in module_cell(d, "app"))
        assert "example/app:1" in module_cell(browser, "app")
        screenshot(browser, shots, "device-edge", DOCS_IMAGES)
        assert browser.execute_script("return window.__notReloaded === true")
        assert browser.find_element(By.ID, "device-state").text == "online"

        browser.find_element(By.CSS_SELECTOR, "#modules-table tr[data-module='app'] button").click()
        wait_for(browser, lambda d: "restartModule" in d.find_element(By.ID, "module-action").text)
        assert ("restartModule", {"schemaVersion": "1.0", "id": "app"}) in calls

        # the module's log through getModuleLogs, then followed: new lines appear by themselves
        row = browser.find_element(By.CSS_SELECTOR, "#modules-table tr[data-module='app']")
        row.find_element(By.CSS_SELECTOR, "button.logs").click()
        wait_for(browser, lambda d: "line 1" in d.find_element(By.ID, "module-logs").text)
        asked = [p for name, p in calls if name == "getModuleLogs"][0]
        assert asked["items"] == [{"id": "app", "filter": {"tail": 100}}]
        browser.find_element(By.CSS_SELECTOR, "#module-logs input[name=follow]").click()
        wait_for(browser, lambda d: "line 3" in d.find_element(By.ID, "module-logs").text)

        form = browser.find_element(By.CSS_SELECTOR, ".method-form")
        form.find_element(By.NAME, "method").send_keys("echo")
        payload = form.find_element(By.NAME, "payload")
        browser.execute_script("arguments[0].value = arguments[1]", payload, '{"n": 1}')
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(
            browser, lambda d: "method status 200" in d.find_element(By.ID, "method-result").text
        )
        assert ("echo", {"n": 1}) in calls
        device.shutdown()  # the state at the top of the page follows, without a reload
        wait_for(browser, lambda d: d.find_element(By.ID, "device-state").text == "offline")
        assert browser.execute_script("return window.__notReloaded === true")

        browser.get(hub.url + "/ui?q=deviceId%20%3D%20%27edge-live%27")
        wait_for(browser, lambda d: d.find_element(By.ID, "count-failed").text == "1")
        assert (
            "failed: app"
            in browser.find_element(By.CSS_SELECTOR, "tr[data-device='edge-live']").text
        )
    finally:
        device.shutdown()


AGENT_WAIT = 90.0  # agents start as Python processes on shared cores
DEVICES = ("ui-1", "ui-2")


def crashes_on(flag: Path) -> dict[str, Any]:
    """A process module printing ticks until ``flag`` exists, then exiting 3 at every start."""
    script = 'while [ ! -e "$0" ]; do echo tick; sleep 0.2; done; echo crashed >&2; exit 3'
    return {
        "type": "process",
        "status": "running",
        "restartPolicy": "always",
        "settings": {"command": ["sh", "-c", script, str(flag)]},
    }


def cells(driver: Any, module_name: str) -> list[str]:
    row = f"#modules-table tr[data-module='{module_name}'] td"
    return [str(c.text) for c in driver.find_elements(By.CSS_SELECTOR, row)]


def last_start(driver: Any, module_name: str) -> str:
    found = driver.find_elements(
        By.CSS_SELECTOR, f"#modules-table tr[data-module='{module_name}'] td:nth-child(5) time"
    )
    return str(found[0].get_attribute("title")) if found else ""


def metric(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def not_reloaded(driver: Any) -> bool:
    return bool(driver.execute_script("return window.__notReloaded === true"))


@contextmanager
def agents_of(running: RunningHub, workdir: Path) -> Iterator[None]:
    """A real agent (process runtime) for each of ``DEVICES``, stopped on the way out."""
    started: list[AgentProcess] = []
    try:
        for device in DEVICES:
            agent = hub_agent(running, workdir / device, device)
            started.append(agent)
            agent.start()
        yield
    finally:
        for agent in started:
            agent.stop()


def test_layered_deployment_and_modules_table_with_real_agents(
    hub: RunningHub, browser: Any, shots: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "crash-now"
    for device in DEVICES:
        create_device(hub, device, {"capabilities": {"iotEdge": True}})
        with hub.client() as api:
            api.patch_twin(device, {"tags": {"ring": "ui"}})
    put_configuration(hub, "ui-base", content({"app": crashes_on(flag)}), "tags.ring = 'ui'", 10)

    # a layered deployment from a file, created while no agent runs yet: nothing reported
    layer = tmp_path / "ui-monitor.json"
    monitor = {"modulesContent": {"$edgeAgent": {"properties.desired.modules.mon": module("mon")}}}
    layer.write_text(json.dumps(monitor))
    browser.get(hub.url + "/ui/deployments/new")
    browser.find_element(By.ID, "dep-id").send_keys("ui-monitor")
    fill_deployment_form(browser, layer, "tags.ring = 'ui'", 20)
    browser.find_element(By.ID, "create-deployment").click()
    wait_for(browser, lambda d: d.current_url.endswith("/ui/deployments/ui-monitor"))
    wait_for(browser, lambda d: metric(d, "metric-applied").endswith("2 / 2"))
    assert metric(browser, "metric-targeted").endswith("2 / 2")
    assert metric(browser, "metric-succeeded").endswith("0 / 2")
    browser.execute_script("window.__notReloaded = true")

    with agents_of(hub, tmp_path):
        # the agents apply base and layer and report: the page follows by itself
        wait_for(browser, lambda d: metric(d, "metric-succeeded").endswith("2 / 2"), AGENT_WAIT)
        assert metric(browser, "metric-failed").endswith("0 / 2")
        assert not_reloaded(browser)

        def agents_column(d: Any) -> list[str]:
            rows = d.find_elements(By.CSS_SELECTOR, "#targeted-table tbody tr")
            return sorted(r.text.split()[-1] for r in rows)

        wait_for(browser, lambda d: agents_column(d) == ["ok", "ok"])
        screenshot(browser, shots, "deployment-agents", DOCS_IMAGES)

        # the device page of a real agent: its modules as its $edgeAgent reports them
        browser.get(hub.url + "/ui/devices/ui-1")
        wait_for(
            browser,
            lambda d: "running" in module_cell(d, "app") and "running" in module_cell(d, "mon"),
            AGENT_WAIT,
        )
        for system in ("edgeAgent", "edgeHub"):
            assert "running" in module_cell(browser, system)
        assert "sh -c 'while :; do echo tick" in module_cell(browser, "mon")  # its command line
        browser.execute_script("window.__notReloaded = true")

        # its log, through the real agent's getModuleLogs
        mon_row = "#modules-table tr[data-module='mon']"
        browser.find_element(By.CSS_SELECTOR, f"{mon_row} button.logs").click()
        wait_for(browser, lambda d: "tick mon" in d.find_element(By.ID, "module-logs").text)

        # Restart: the real agent's restartModule starts app again, the table shows the new start
        started = last_start(browser, "app")
        assert started
        browser.find_element(By.CSS_SELECTOR, "#modules-table tr[data-module='app'] button").click()
        wait_for(browser, lambda d: "method status 200" in metric(d, "module-action"))
        wait_for(browser, lambda d: last_start(d, "app") not in ("", started), AGENT_WAIT)

        # app crashes at every start: backoff, then failed after the agent's 3 restarts
        flag.touch()
        wait_for(browser, lambda d: cells(d, "app")[1:4] == ["failed", "3", "3"], AGENT_WAIT)
        assert "running" in module_cell(browser, "mon")
        assert not_reloaded(browser)
        screenshot(browser, shots, "device-agent", DOCS_IMAGES)

        # the fleet lists both boxes with their crashed module
        browser.get(hub.url + "/ui?q=tags.ring%20%3D%20%27ui%27")

        def fleet_rows(d: Any) -> list[str]:
            rows = d.find_elements(By.CSS_SELECTOR, "#fleet-table tbody tr[data-device]")
            return [str(r.text) for r in rows]

        wait_for(browser, lambda d: len(fleet_rows(d)) == 2)
        wait_for(browser, lambda d: all("failed: app" in row for row in fleet_rows(d)))


UNLABELLED = """
return Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, a[href]')).filter(function (el) {
  if (el.tagName === 'BUTTON' || el.tagName === 'A')
    return !(el.textContent.trim() || el.getAttribute('aria-label') || el.title);
  if (el.labels && el.labels.length) return false;
  return !(el.getAttribute('aria-label') || el.getAttribute('aria-labelledby'));
}).map(function (el) { return el.outerHTML.slice(0, 160); });
"""


def test_every_control_is_labelled_and_the_main_actions_work_from_the_keyboard(
    hub: RunningHub, browser: Any
) -> None:
    from selenium.webdriver.common.keys import Keys

    pages = ["/ui", "/ui/devices/cam-1", "/ui/devices/cam-1/live", "/ui/deployments"]
    pages += ["/ui/deployments/new", "/ui/deployments/monitor"]
    for page in pages:
        browser.get(hub.url + page)
        wait_for(browser, lambda d: d.find_elements(By.ID, "main"))
        assert browser.execute_script(UNLABELLED) == [], page

    def focused(d: Any) -> Any:
        return d.switch_to.active_element

    def tab_to(element_id: str, presses: int = 40) -> None:
        for _ in range(presses):
            if focused(browser).get_attribute("id") == element_id:
                return
            focused(browser).send_keys(Keys.TAB)
        raise AssertionError(f"#{element_id} is not reachable with Tab")

    # the fleet filter: Tab to it from the top of the page, type a query, Enter
    browser.get(hub.url + "/ui")
    wait_for(browser, lambda d: d.find_elements(By.ID, "fleet-table"))
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    tab_to("q")
    focused(browser).send_keys("deviceId = 'cam-1'", Keys.ENTER)
    wait_for(browser, lambda d: "q=" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#fleet-table tbody tr[data-device]")
    assert [r.get_attribute("data-device") for r in rows] == ["cam-1"]
    # sign out and in again without a mouse
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    tab_to("sign-out")
    focused(browser).send_keys(Keys.ENTER)
    wait_for(browser, lambda d: "/ui/login" in d.current_url)
    wait_for(browser, lambda d: focused(d).get_attribute("id") == "token")  # autofocus
    focused(browser).send_keys(hub.token, Keys.ENTER)
    wait_for(browser, lambda d: d.find_elements(By.ID, "sign-out"))


def test_read_only_token_and_csrf(hub: RunningHub, browser: Any, shots: Path) -> None:
    # a write without the session's CSRF token is refused, even with a valid session
    with session_http(hub, browser) as http:
        device_page = http.get("/ui/devices/cam-1")
        assert device_page.status_code == 200
        doc = json.dumps({"tags": {"site": "evil"}})
        refused = http.post("/ui/devices/cam-1/twin", data={"etag": "*", "document": doc})
        assert refused.status_code == 403 and "CSRF" in refused.text
        wrong = http.post("/ui/devices/cam-1/twin", data={"csrf": "x", "document": doc})
        assert wrong.status_code == 403
    with hub.client() as api:
        assert api.request("GET", "/twins/cam-1").json()["tags"]["site"] == "plant-3"

    browser.find_element(By.ID, "sign-out").click()
    wait_for(browser, lambda d: "/ui/login" in d.current_url)
    reader = create_token(hub.data_dir, "registry:read")
    sign_in(browser, hub, reader)
    browser.get(hub.url + "/ui/devices/cam-1")
    wait_for(browser, lambda d: d.find_elements(By.ID, "twin-h"))
    assert not browser.find_elements(By.ID, "save-twin")
    assert not browser.find_elements(By.CSS_SELECTOR, "form[action$='/rotate']")
    assert not browser.find_elements(By.CSS_SELECTOR, ".method-form")
    browser.get(hub.url + "/ui/deployments")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-config='monitor']"))
    assert not browser.find_elements(By.ID, "new-deployment")
    with session_http(hub, browser) as http:
        page = http.get("/ui/deployments/monitor").text
        csrf = re.search(r'X-CSRF-Token": "([^"]+)"', page)
        assert csrf is not None
        token = csrf.group(1)
        twin = http.post(
            "/ui/devices/cam-1/twin", data={"csrf": token, "etag": "*", "document": "{}"}
        )
        assert twin.status_code == 403
        pause = http.post("/ui/deployments/monitor/rollout/pause", data={"csrf": token})
        assert pause.status_code == 403
        rotate = http.post("/ui/devices/cam-1/rotate", data={"csrf": token, "which": "primary"})
        assert rotate.status_code == 403
        # module logs come through a direct method: refused without the scope methods need
        assert http.get("/ui/devices/cam-1/modules/app/logs").status_code == 403
    # a narrow window still reads
    browser.set_window_size(420, 800)
    try:
        browser.get(hub.url + "/ui")
        wait_for(browser, lambda d: d.find_elements(By.ID, "fleet-table"))
        screenshot(browser, shots, "fleet-narrow", DOCS_IMAGES)
    finally:
        browser.set_window_size(1280, 800)
    assert sorted(p.name for p in shots.glob("*.png")) == sorted(
        f"{n}.png"
        for n in (
            "login",
            "fleet",
            "device",
            "device-edge",
            "deployment-new",
            "deployments",
            "deployment",
            "live",
            "deployment-agents",
            "device-agent",
            "fleet-narrow",
        )
    )
