"""Which live connections must close after a registry change (``Admission.refused_among``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cloud_hub.broker.admission import Admission


class _Registry:
    def __init__(self, enabled: dict[tuple[str, str | None], bool]) -> None:
        self.enabled = enabled
        self.reads: list[tuple[str, str | None]] = []

    def identity(self, device_id: str, module_id: str | None = None) -> Any:
        self.reads.append((device_id, module_id))
        found = self.enabled.get((device_id, module_id))
        return None if found is None else SimpleNamespace(enabled=found)


def _admission(tmp_path: Path, enabled: dict[tuple[str, str | None], bool]) -> Admission:
    ca: Any = SimpleNamespace(crl_file=tmp_path / "no-crl.pem")
    return Admission(_Registry(enabled), ca, "service-password")


def test_disabled_deleted_and_revoked_connections_are_refused_the_others_stay(
    tmp_path: Path,
) -> None:
    admission = _admission(
        tmp_path, {("cam-1", None): True, ("cam-2", None): False, ("cam-1", "scorer"): True}
    )
    crl_reads = []

    def revoked() -> set[int]:
        crl_reads.append(1)
        return {7}

    admission.revoked_serials = revoked  # type: ignore[method-assign]
    live = [
        ("cam-1", None, None),  # SAS, enabled: stays
        ("cam-1", None, 5),  # a certificate not revoked: stays
        ("cam-1", None, 7),  # a revoked certificate
        ("cam-2", None, None),  # disabled
        ("cam-3", None, None),  # deleted
        ("cam-1", "scorer", None),  # an enabled module: stays
    ]
    assert admission.refused_among(live) == {
        ("cam-1", None, 7),
        ("cam-2", None, None),
        ("cam-3", None, None),
    }
    assert len(crl_reads) == 1


def test_each_identity_is_read_once_however_many_connections_it_has(tmp_path: Path) -> None:
    admission = _admission(tmp_path, {("cam-1", None): True})
    registry = admission.registry
    live = [("cam-1", None, None)] * 50 + [("cam-9", None, None)] * 3
    assert admission.refused_among(live) == {("cam-9", None, None)}
    assert sorted(registry.reads) == [("cam-1", None), ("cam-9", None)]


def test_without_a_crl_file_no_certificate_counts_as_revoked(tmp_path: Path) -> None:
    admission = _admission(tmp_path, {("cam-1", None): True})
    assert admission.refused_among([("cam-1", None, 7)]) == set()
