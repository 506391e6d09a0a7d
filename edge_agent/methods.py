"""Built-in direct methods of ``$edgeAgent`` with IoT Edge's payloads.

``ping``, ``restartModule {schemaVersion, id}``, ``getModuleLogs {schemaVersion, items: [{id,
filter: {tail, since, until, regex}}], encoding: none|gzip, contentType: json|text}`` and
``uploadModuleLogs`` (same plus ``sasUrl``: the logs are PUT to that URL, e.g. the hub's upload
endpoint) with ``getTaskStatus {correlationId}`` to follow an upload.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
import time
import uuid
from typing import Any

from edge_agent.reconciler import Reconciler
from edge_agent.runtime.base import LogLine
from edgefleet.utctime import parse_utc_text, utc_text

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: Any) -> float | None:
    """Unix seconds, a duration back from now (``15m``, ``2h``) or an RFC 3339 time."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    m = _DURATION.match(text)
    if m:
        return time.time() - float(m.group(1)) * _UNITS[m.group(2)]
    return parse_utc_text(text).timestamp()


class MethodError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BuiltinMethods:
    def __init__(self, reconciler: Reconciler, device_id: str) -> None:
        self.reconciler = reconciler
        self.device_id = device_id
        self.tasks: dict[str, dict[str, Any]] = {}

    def handle(self, name: str, payload: Any) -> tuple[int, Any]:
        fn = {
            "ping": self.ping,
            "restartModule": self.restart_module,
            "getModuleLogs": self.get_module_logs,
            "uploadModuleLogs": self.upload_module_logs,
            "getTaskStatus": self.get_task_status,
        }.get(name)
        if fn is None:
            return 404, {"message": f"method {name} is not supported by $edgeAgent"}
        try:
            return 200, fn(payload if isinstance(payload, dict) else {})
        except MethodError as exc:
            return exc.status, {"message": str(exc)}
        except (ValueError, TypeError, re.error) as exc:
            return 400, {"message": f"bad payload: {exc}"}
        except Exception as exc:  # the runtime refused (engine down ...): IoT Edge's 500
            return 500, {"message": str(exc) or type(exc).__name__}

    def ping(self, payload: dict[str, Any]) -> Any:
        return None

    def restart_module(self, payload: dict[str, Any]) -> Any:
        module = payload.get("id")
        if not isinstance(module, str) or not module:
            raise MethodError(400, "payload needs id (the module name)")
        try:
            self.reconciler.restart_module(module)
        except KeyError:
            raise MethodError(404, f"module {module} is not running on this device") from None
        return {}

    def _collect(self, payload: dict[str, Any]) -> list[tuple[str, list[LogLine]]]:
        items = payload.get("items")
        if not isinstance(items, list) or not items:
            raise MethodError(400, "payload needs items: [{id, filter}]")
        desired = self.reconciler.desired
        names = list(desired.modules) if desired else []
        out: list[tuple[str, list[LogLine]]] = []
        for item in items:
            pattern = re.compile(str(item.get("id", "")))
            flt = item.get("filter") or {}
            tail = flt.get("tail")
            since = parse_time(flt.get("since"))
            until = parse_time(flt.get("until"))
            regex = re.compile(flt["regex"]) if flt.get("regex") else None
            matched = [n for n in names if pattern.fullmatch(n)]
            if not matched:
                raise MethodError(404, f"no module matches id {item.get('id')!r}")
            for name in matched:
                rt = self.reconciler.runtime_for(name)
                lines = rt.logs(name, None if regex else tail, since, until) if rt else []
                if regex:
                    lines = [ln for ln in lines if regex.search(ln.text)]
                    if tail:
                        lines = lines[-int(tail) :]
                out.append((name, lines))
        return out

    def _render(self, name: str, lines: list[LogLine], content_type: str, encoding: str) -> Any:
        if content_type == "text":
            body: Any = "".join(f"{ln.text}\n" for ln in lines)
        else:
            body = [
                {
                    "timestamp": utc_text(ln.time),
                    "moduleId": name,
                    "stream": ln.stream,
                    "content": ln.text,
                }
                for ln in lines
            ]
        if encoding == "gzip":
            raw = body if isinstance(body, str) else json.dumps(body)
            return {
                "id": name,
                "payloadBytes": base64.b64encode(gzip.compress(raw.encode())).decode(),
            }
        return {"id": name, "payload": body}

    def get_module_logs(self, payload: dict[str, Any]) -> Any:
        content_type = payload.get("contentType", "json")
        encoding = payload.get("encoding", "none")
        if content_type not in ("json", "text") or encoding not in ("none", "gzip"):
            raise MethodError(400, "contentType must be json|text and encoding none|gzip")
        return [self._render(n, ls, content_type, encoding) for n, ls in self._collect(payload)]

    def upload_module_logs(self, payload: dict[str, Any]) -> Any:
        url = payload.get("sasUrl")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise MethodError(400, "payload needs sasUrl (http(s) URL to PUT the logs to)")
        content_type = payload.get("contentType", "json")
        encoding = payload.get("encoding", "none")
        collected = self._collect(payload)
        task = {"status": "Running", "message": "", "correlationId": uuid.uuid4().hex}
        self.tasks[task["correlationId"]] = task

        def upload() -> None:
            import httpx

            try:
                for name, lines in collected:
                    item = self._render(name, lines, content_type, "none")
                    raw = item["payload"]
                    data = (raw if isinstance(raw, str) else json.dumps(raw)).encode()
                    if encoding == "gzip":
                        data = gzip.compress(data)
                    sep = "&" if "?" in url else "?"
                    r = httpx.put(f"{url}{sep}module={name}", content=data, timeout=30)
                    r.raise_for_status()
                task["status"] = "Completed"
            except Exception as exc:  # report any failure in the task status
                task["status"], task["message"] = "Failed", str(exc)

        threading.Thread(target=upload, name="upload-logs", daemon=True).start()
        return dict(task)

    def get_task_status(self, payload: dict[str, Any]) -> Any:
        task = self.tasks.get(str(payload.get("correlationId", "")))
        if task is None:
            raise MethodError(404, "unknown correlationId")
        return dict(task)
