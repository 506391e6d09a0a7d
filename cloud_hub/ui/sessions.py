"""Dashboard sessions, kept in the hub process's memory (no table, nothing to migrate).

A session holds the API token it was opened with (never sent back to the browser), a CSRF token
for its writes and the time it was last used. One-time sign-in codes let a program that holds a
token (``edgefleet demo``) print a link that opens a session once, without a token in the URL.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class UiSession:
    id: str
    token: str
    csrf: str
    last_used: float


class SessionStore:
    """Sessions by id; idle ones expire after ``idle_seconds``; at most ``max_sessions``."""

    def __init__(
        self,
        idle_seconds: float = 12 * 3600,
        max_sessions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, UiSession] = {}
        self._lock = threading.Lock()

    def open(self, token: str) -> UiSession:
        now = self._clock()
        session = UiSession(secrets.token_urlsafe(32), token, secrets.token_urlsafe(32), now)
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= self.max_sessions:  # drop the least recently used
                oldest = min(self._sessions.values(), key=lambda s: s.last_used)
                del self._sessions[oldest.id]
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> UiSession | None:
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_used > self.idle_seconds:
                del self._sessions[session_id]
                return None
            session.last_used = now
            return session

    def close(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self, now: float) -> None:
        stale = [k for k, s in self._sessions.items() if now - s.last_used > self.idle_seconds]
        for key in stale:
            del self._sessions[key]


class LoginCodes:
    """Single-use codes that stand for a token for ``ttl_seconds``; at most ``max_codes`` live
    (the oldest go first)."""

    def __init__(
        self,
        ttl_seconds: float = 600,
        clock: Callable[[], float] = time.monotonic,
        max_codes: int = 10_000,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_codes = max_codes
        self._clock = clock
        self._codes: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, token: str) -> str:
        code = secrets.token_urlsafe(24)
        with self._lock:
            now = self._clock()
            self._codes = {k: v for k, v in self._codes.items() if v[1] > now}
            while len(self._codes) >= self.max_codes:  # dicts keep insertion order
                del self._codes[next(iter(self._codes))]
            self._codes[code] = (token, now + self.ttl_seconds)
        return code

    def redeem(self, code: str) -> str | None:
        """The token of a valid code, which is then spent; None otherwise."""
        with self._lock:
            entry = self._codes.pop(code, None)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]
