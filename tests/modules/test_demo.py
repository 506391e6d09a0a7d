"""``edgefleet demo`` end to end, as a user runs it: hub, agent and modules as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.common.by import By

from edgefleet.hubclient import HubClient, HubClientError
from tests.support.browser import chromium, screenshot, wait_for
from tests.support.hub import edgefleet_cmd

CAT_CLASSES = {281, 282, 285}
ROOT = Path(__file__).resolve().parents[2]


def _wait(check: Any, proc: subprocess.Popen[str], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        assert proc.poll() is None, f"demo exited ({proc.returncode}) while waiting for {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _sensor_reported(hub: HubClient) -> dict[str, Any]:
    try:
        twin = hub.get_twin("demo-edge", "simulatedSensor")
    except HubClientError:
        return {}
    return dict(twin["properties"]["reported"])


def test_demo_runs_the_pipeline_and_prints_a_summary(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    args = ["demo", "--duration", "30", "--frame-interval", "1", "--json"]
    args += ["--data-dir", str(data_dir), "--model-dir", str(tmp_path / "models")]
    err_path = tmp_path / "demo-stderr.txt"
    with err_path.open("w") as err_file:
        proc = subprocess.Popen(
            edgefleet_cmd(*args),
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
            cwd=tmp_path,
        )
    try:
        # while it runs, a desired-property change reaches the sensor module through the hub
        url = _wait(lambda: _read(data_dir / "hub-url"), proc, "the hub")
        token = _wait(lambda: _read(data_dir / "token"), proc, "the token")
        # the printed dashboard link signs in once, and carries no token
        link = _wait(lambda: _dashboard_link(err_path), proc, "the dashboard link")
        assert link.startswith(url + "/ui/login?code=") and token not in link
        with HubClient(url, token) as hub:
            _wait(lambda: _sensor_reported(hub).get("SendInterval") == 1.0, proc, "the sensor")
            patch = {"properties": {"desired": {"SendInterval": 0.3}}}
            hub.patch_twin("demo-edge", patch, "simulatedSensor")
            _wait(lambda: _sensor_reported(hub).get("SendInterval") == 0.3, proc, "the patch", 60)
        # the link signs a browser in once; the dashboard shows the demo's device, its
        # deployment and the scoring module's live results
        _dashboard_shows_the_demo(link, url, tmp_path / "screenshots")
        assert httpx.get(link, follow_redirects=False).status_code == 401
        stdout, _ = proc.communicate(timeout=120)
        stderr = err_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["messagesStored"] > 0
    assert summary["messagesByModule"]["simulatedSensor"] > 0
    assert summary["scoringResults"] > 0
    results = {r["frame"]: r for r in summary["latestResults"]}
    assert results["chelsea"]["classId"] in CAT_CLASSES, results
    assert "cat" in results["chelsea"]["label"]
    assert summary["modules"] == {
        "simulatedSensor": "running",
        "camera": "running",
        "scoring": "running",
    }
    assert summary["exitCodes"] == {"agent": 0, "hub": 0}
    # the model was built into the empty store on the way (shown as a step on stderr)
    assert "building efficientnet-lite0" in stderr
    # every module stopped on the agent's SIGTERM
    for module in ("simulatedSensor", "camera", "scoring"):
        log = (data_dir / "agent" / "data" / "logs" / f"{module}.log").read_text()
        assert log.rstrip().endswith("stopped"), log[-500:]


def _dashboard_shows_the_demo(link: str, url: str, shots: Path) -> None:
    with chromium() as browser:
        browser.get(link)
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-device='demo-edge']"))
        row = browser.find_element(By.CSS_SELECTOR, "tr[data-device='demo-edge']").text
        assert "camera-pipeline" in row, row
        screenshot(browser, shots, "demo-fleet")
        browser.get(url + "/ui/deployments")
        wait_for(
            browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-config='camera-pipeline']")
        )
        browser.get(url + "/ui/devices/demo-edge/live")
        # the photos take turns; the result for chelsea names a cat
        wait_for(
            browser,
            lambda d: "cat" in d.find_element(By.ID, "top-classes").text,
            timeout=30,
        )
        screenshot(browser, shots, "demo-live")


def _dashboard_link(stderr_file: Path) -> str:
    for line in stderr_file.read_text().splitlines():
        if "dashboard (one-time sign-in link):" in line:
            return line.split("link):", 1)[1].strip()
    return ""


def _read(path: Path) -> str:
    """The file's line once it is whole (the demo writes it with a newline at the end)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    return text.strip() if text.endswith("\n") else ""


def test_a_failed_step_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "composition.cli", "demo", "--data-dir", str(blocker), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: demo step 'preparing the data directory' failed:")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
