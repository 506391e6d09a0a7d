"""The hub's certificate authority: broker server certificates, device certificates and the CRL.

Files live under ``<data_dir>/ca/``: ``ca.pem``/``ca.key`` (the root), ``server.pem``/``server.key``
(the broker's TLS certificate), ``https.pem``/``https.key`` (the REST API's HTTPS listener),
``devices/<id>.pem|.key`` (issued device certificates),
``crl.pem`` (revoked serials, regenerated on every revocation) and ``revoked.json``.
Device certificates carry the device id as subject CN; mosquitto maps it to the MQTT user name
(``use_identity_as_username``), so the same ``%u`` ACL applies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefleet.files import atomic_write_bytes
from edgefleet.utctime import utc_now

_LOCK = threading.Lock()


def _write_private(path: Path, data: bytes) -> None:
    """Keys: owner-only."""
    atomic_write_bytes(path, data, 0o600)


def _write(path: Path, data: bytes) -> None:
    """Certificates, the CRL and the serial lists: readable by the broker and other users."""
    atomic_write_bytes(path, data, 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def thumbprint(cert_pem: bytes) -> str:
    """SHA-256 thumbprint (upper-case hex) of a PEM certificate, as the registry stores it."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def _sans(hostnames: list[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return sans


def _cert_current(hostnames: list[str], cert_file: Path, key_file: Path) -> bool:
    """True when the certificate exists, names exactly ``hostnames`` and is valid for 30 days
    more."""
    if not (cert_file.exists() and key_file.exists()):
        return False
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    if cert.not_valid_after_utc - utc_now() < dt.timedelta(days=30):
        return False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(names) == set(_sans(hostnames))


@dataclass(frozen=True)
class IssuedCert:
    device_id: str
    cert_file: Path
    key_file: Path
    serial: int
    thumbprint: str


class HubCA:
    """A small file-backed CA (EC P-256). Safe to construct many times over the same directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.ca_file = self.dir / "ca.pem"
        self.ca_key_file = self.dir / "ca.key"
        self.server_cert_file = self.dir / "server.pem"
        self.server_key_file = self.dir / "server.key"
        self.https_cert_file = self.dir / "https.pem"
        self.https_key_file = self.dir / "https.key"
        self.crl_file = self.dir / "crl.pem"
        self._revoked_file = self.dir / "revoked.json"
        self._issued_file = self.dir / "issued.json"
        self._held: set[str] = set()

    # -- root ---------------------------------------------------------------------------------

    def ensure(self, hostnames: list[str] | None = None) -> HubCA:
        """Create the root, the broker server certificate and an (empty) CRL if missing."""
        with _LOCK:
            if not self.ca_file.exists() or not self.ca_key_file.exists():
                self._create_root()
            if not self.server_cert_file.exists():
                self._issue_server(hostnames or ["localhost", "127.0.0.1"])
            if not self.crl_file.exists():
                self._write_crl()
        return self

    def _create_root(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet hub CA")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(utc_now() - dt.timedelta(minutes=5))
            .not_valid_after(utc_now() + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.ca_key_file, _key_pem(key))
        _write(self.ca_file, cert.public_bytes(serialization.Encoding.PEM))

    def _load_root(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def _leaf(
        self,
        common_name: str,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None,
        days: int,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        ca_cert, ca_key = self._load_root()
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(utc_now() - dt.timedelta(minutes=5))
            .not_valid_after(utc_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    def _issue_server(self, hostnames: list[str]) -> None:
        self._issue_server_to(hostnames, self.server_cert_file, self.server_key_file)

    def _issue_server_to(self, hostnames: list[str], cert_file: Path, key_file: Path) -> None:
        cert, key = self._leaf(hostnames[0], ExtendedKeyUsageOID.SERVER_AUTH, _sans(hostnames), 825)
        _write_private(key_file, _key_pem(key))
        _write(cert_file, cert.public_bytes(serialization.Encoding.PEM))

    def ensure_https(self, hostnames: list[str]) -> tuple[Path, Path]:
        """The REST API's certificate and key for ``hostnames`` (the first is its CN): issued
        anew when missing, when its names differ or when it expires within 30 days."""
        return self.ensure_server_cert(hostnames, self.https_cert_file, self.https_key_file)

    def ensure_server_cert(
        self, hostnames: list[str], cert_file: Path, key_file: Path
    ) -> tuple[Path, Path]:
        """A server certificate and key for ``hostnames`` in these files, kept as
        ``ensure_https`` keeps the REST API's."""
        self.ensure(hostnames)
        with _LOCK:
            if not _cert_current(hostnames, cert_file, key_file):
                self._issue_server_to(hostnames, cert_file, key_file)
        return cert_file, key_file

    # -- devices ------------------------------------------------------------------------------

    def device_cert_paths(self, device_id: str) -> tuple[Path, Path]:
        safe = hashlib.sha256(device_id.encode()).hexdigest()[:16]
        base = self.dir / "devices" / safe
        return base.with_suffix(".pem"), base.with_suffix(".key")

    def issue_device_cert(self, device_id: str, days: int = 365) -> IssuedCert:
        """Issue a client certificate with CN = device id (a new key pair every time)."""
        self.ensure()
        with _LOCK:
            cert, key = self._leaf(device_id, ExtendedKeyUsageOID.CLIENT_AUTH, None, days)
            cert_file, key_file = self.device_cert_paths(device_id)
            pem = cert.public_bytes(serialization.Encoding.PEM)
            _write_private(key_file, _key_pem(key))
            _write(cert_file, pem)
            issued = self.issued()
            issued[str(cert.serial_number)] = device_id
            _write(self._issued_file, json.dumps(issued, indent=1).encode())
            if device_id in self._held:
                self._write_crl()
        return IssuedCert(device_id, cert_file, key_file, cert.serial_number, thumbprint(pem))

    def issue_untracked(self, device_id: str, directory: Path) -> tuple[Path, Path]:
        """A short-lived certificate for the hub itself acting as ``device_id`` (to take over and
        close a connection); not recorded in ``issued.json``, so a CRL hold never covers it."""
        self.ensure()
        cert, key = self._leaf(device_id, ExtendedKeyUsageOID.CLIENT_AUTH, None, 1)
        name = hashlib.sha256(device_id.encode()).hexdigest()[:16]
        cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
        _write_private(key_file, _key_pem(key))
        _write_private(cert_file, cert.public_bytes(serialization.Encoding.PEM))
        return cert_file, key_file

    # -- revocation ---------------------------------------------------------------------------

    def issued(self) -> dict[str, str]:
        """Every serial this CA issued to a device (decimal strings) -> device id."""
        if not self._issued_file.exists():
            return {}
        data: dict[str, str] = json.loads(self._issued_file.read_text())
        return data

    def hold_devices(self, device_ids: set[str]) -> bool:
        """Put every certificate of these (disabled or deleted) devices on hold in the CRL.

        Returns True when the CRL changed. A device taken off the set is released again
        (``certificateHold`` is the one reversible revocation reason).
        """
        with _LOCK:
            if device_ids == self._held and self.crl_file.exists():
                return False
            self._held = set(device_ids)
            self._write_crl()
        return True

    def revoked(self) -> dict[str, str]:
        """Revoked serials (decimal strings) -> device id."""
        if not self._revoked_file.exists():
            return {}
        data: dict[str, str] = json.loads(self._revoked_file.read_text())
        return data

    def revoke(self, cert_pem: bytes) -> int:
        """Add a certificate to the CRL; returns its serial."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        with _LOCK:
            revoked = self.revoked()
            revoked[str(cert.serial_number)] = str(cn[0].value) if cn else ""
            _write(self._revoked_file, json.dumps(revoked, indent=1).encode())
            self._write_crl()
        return cert.serial_number

    def revoke_device(self, device_id: str) -> int | None:
        """Revoke the last certificate issued to a device by this CA, if any."""
        cert_file, _ = self.device_cert_paths(device_id)
        if not cert_file.exists():
            return None
        return self.revoke(cert_file.read_bytes())

    def _write_crl(self) -> None:
        ca_cert, ca_key = self._load_root()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(utc_now() - dt.timedelta(minutes=5))
            .next_update(utc_now() + dt.timedelta(days=3650))
        )
        revoked = self.revoked()
        held = {s for s, d in self.issued().items() if d in self._held} - set(revoked)
        for serial in [*revoked, *sorted(held)]:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial))
                .revocation_date(utc_now() - dt.timedelta(minutes=1))
            )
            if serial in held:
                entry = entry.add_extension(
                    x509.CRLReason(x509.ReasonFlags.certificate_hold), critical=False
                )
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(ca_key, hashes.SHA256())
        _write(self.crl_file, crl.public_bytes(serialization.Encoding.PEM))
