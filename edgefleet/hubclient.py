"""A small synchronous HTTP client for the hub's REST API (used by the CLI, agents and tools)."""

from __future__ import annotations

import os
from typing import Any

import httpx

ENV_HUB = "EDGEFLEET_HUB"
ENV_TOKEN = "EDGEFLEET_TOKEN"
API_VERSION = "2021-04-12"


class HubClientError(Exception):
    """A failed call: ``status`` is the HTTP status (0 when the hub could not be reached)."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class HubClient:
    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base_url = base_url or os.environ.get(ENV_HUB)
        token = token or os.environ.get(ENV_TOKEN)
        if not base_url:
            raise HubClientError(f"no hub URL: pass --hub or set {ENV_HUB}")
        if "://" not in base_url:
            base_url = "http://" + base_url
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        query = {"api-version": API_VERSION, **(params or {})}
        try:
            response = self._http.request(method, path, json=json, headers=headers, params=query)
        except httpx.HTTPError as exc:
            raise HubClientError(f"cannot reach hub at {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise HubClientError(_error_text(response), response.status_code, _body(response))
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    # -- registry ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/health")
        return result

    def create_device(self, device_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "PUT", f"/devices/{_q(device_id)}", json={"deviceId": device_id, **(body or {})}
        )
        return result

    def update_device(
        self, device_id: str, body: dict[str, Any], etag: str = "*"
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "PUT", f"/devices/{_q(device_id)}", json=body, headers={"If-Match": f'"{etag}"'}
        )
        return result

    def get_device(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/devices/{_q(device_id)}")
        return result

    def delete_device(self, device_id: str, etag: str | None = None) -> None:
        headers = {"If-Match": f'"{etag}"'} if etag else None
        self.request("DELETE", f"/devices/{_q(device_id)}", headers=headers)

    def list_devices_page(
        self, top: int = 100, continuation: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        headers = {"x-ms-continuation": continuation} if continuation else None
        response = self.request("GET", "/devices", params={"top": top}, headers=headers)
        return response.json(), response.headers.get("x-ms-continuation")

    def list_devices(self, page_size: int = 1000) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page, token = self.list_devices_page(page_size, token)
            devices.extend(page)
            if not token:
                return devices

    def bulk_devices(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """IoT Hub bulk registry call: items carry ``id`` and ``importMode`` (<= 1000 items).

        Returns ``{"isSuccessful", "errors", "warnings"}``; per-item failures do not raise.
        """
        response = self._http.post(
            "/devices", json=items, params={"api-version": API_VERSION}, timeout=120
        )
        body = _body(response)
        if response.status_code == 400 and isinstance(body, dict) and "isSuccessful" in body:
            return body
        if response.status_code >= 400:
            raise HubClientError(_error_text(response), response.status_code, body)
        result: dict[str, Any] = body
        return result

    def create_module(
        self, device_id: str, module_id: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "PUT",
            f"/devices/{_q(device_id)}/modules/{_q(module_id)}",
            json={"moduleId": module_id, **(body or {})},
        )
        return result

    def get_module(self, device_id: str, module_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "GET", f"/devices/{_q(device_id)}/modules/{_q(module_id)}"
        )
        return result

    def list_modules(self, device_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"/devices/{_q(device_id)}/modules")
        return result

    def rotate_key(
        self, device_id: str, which: str = "primary", module_id: str | None = None
    ) -> dict[str, Any]:
        """A new primary or secondary key (``which``), or the two swapped; the updated identity."""
        path = f"/devices/{_q(device_id)}" + (f"/modules/{_q(module_id)}" if module_id else "")
        result: dict[str, Any] = self._json("POST", f"{path}/rotateKey", params={"which": which})
        return result

    def apply_configuration_content(self, device_id: str, content: dict[str, Any]) -> None:
        """Set an edge device's modules: every module twin gets its ``modulesContent`` desired."""
        self.request("POST", f"/devices/{_q(device_id)}/applyConfigurationContent", json=content)

    # -- twins -------------------------------------------------------------------------------

    def _twin_path(self, device_id: str, module_id: str | None) -> str:
        path = f"/twins/{_q(device_id)}"
        return path + (f"/modules/{_q(module_id)}" if module_id else "")

    def get_twin(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", self._twin_path(device_id, module_id))
        return result

    def patch_twin(
        self,
        device_id: str,
        patch: dict[str, Any],
        module_id: str | None = None,
        etag: str | None = None,
    ) -> dict[str, Any]:
        headers = {"If-Match": f'"{etag}"'} if etag else None
        result: dict[str, Any] = self._json(
            "PATCH", self._twin_path(device_id, module_id), json=patch, headers=headers
        )
        return result

    def replace_twin(
        self, device_id: str, twin: dict[str, Any], module_id: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._json("PUT", self._twin_path(device_id, module_id), json=twin)
        return result

    # -- deployments (configurations) --------------------------------------------------------

    def put_configuration(
        self, config_id: str, body: dict[str, Any], if_match: str | None = None
    ) -> dict[str, Any]:
        """Create (no ``if_match``) or update a configuration (``if_match``: its etag or ``*``)."""
        headers = {"If-Match": _quoted_etag(if_match)} if if_match else None
        result: dict[str, Any] = self._json(
            "PUT", f"/configurations/{_q(config_id)}", json=body, headers=headers
        )
        return result

    def get_configuration(self, config_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/configurations/{_q(config_id)}")
        return result

    def list_configurations(self, top: int = 100) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/configurations", params={"top": top})
        return result

    def delete_configuration(self, config_id: str, if_match: str = "*") -> None:
        headers = {"If-Match": _quoted_etag(if_match)}
        self.request("DELETE", f"/configurations/{_q(config_id)}", headers=headers)

    def test_queries(
        self, target_condition: str, custom_metric_queries: dict[str, str]
    ) -> dict[str, Any]:
        """``{"targetConditionError", "customMetricQueryErrors"}``; empty texts mean valid."""
        body = {"targetCondition": target_condition, "customMetricQueries": custom_metric_queries}
        result: dict[str, Any] = self._json("POST", "/configurations/testQueries", json=body)
        return result

    def rollout_action(self, config_id: str, action: str) -> dict[str, Any]:
        """``action``: pause, resume or abort; the configuration as it is afterwards."""
        result: dict[str, Any] = self._json(
            "POST", f"/configurations/{_q(config_id)}/rollout/{_q(action)}"
        )
        return result

    def device_deployments(self, device_id: str) -> list[dict[str, Any]]:
        """The deployments a device was given, newest first."""
        result: list[dict[str, Any]] = self._json("GET", f"/devices/{_q(device_id)}/deployments")
        return result

    # -- queries -----------------------------------------------------------------------------

    def query_page(
        self, query: str, page_size: int = 100, continuation: str | None = None
    ) -> tuple[list[Any], str | None]:
        headers = {"x-ms-max-item-count": str(page_size)}
        if continuation:
            headers["x-ms-continuation"] = continuation
        response = self.request("POST", "/devices/query", json={"query": query}, headers=headers)
        return response.json(), response.headers.get("x-ms-continuation")

    def query(self, query: str, page_size: int = 1000) -> list[Any]:
        rows: list[Any] = []
        token: str | None = None
        while True:
            page, token = self.query_page(query, page_size, token)
            rows.extend(page)
            if not token:
                return rows


def _q(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


def _quoted_etag(etag: str) -> str:
    return etag if etag == "*" or etag.startswith('"') else f'"{etag}"'


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _error_text(response: httpx.Response) -> str:
    body = _body(response)
    if isinstance(body, dict):
        message = body.get("message") or body.get("Message") or body.get("detail")
        if message:
            return f"hub answered {response.status_code}: {message}"
    return f"hub answered {response.status_code}: {str(body)[:200]}"
