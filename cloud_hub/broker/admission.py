"""Who a device connection is: the credential checks of the hub's MQTT listeners (the embedded
broker's and the front end's), against the registry and the hub CA's CRL."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefleet import iothub_dialect as iothub
from edgefleet import protocol as p
from edgefleet import sas
from edgefleet.ca import HubCA

log = logging.getLogger(__name__)

SERVICE_USERS = (p.HUB_USERNAME, p.HUB_USERNAME + "/aux")


class Admission:
    """Credential checks of one hub (thread-safe: they read the registry and the CRL file)."""

    def __init__(self, registry: Any, ca: HubCA, service_password: str) -> None:
        self.registry = registry
        self.ca = ca
        self._service_password = service_password

    def check_password(self, username: str, password: str) -> bool:
        """edgefleet's own user names (``{id}``, ``{id}/secondary``, the service users) and
        their passwords (:func:`edgefleet.protocol.mqtt_password`)."""
        if username in SERVICE_USERS:
            return hmac.compare_digest(password, self._service_password)
        device_id, slot = p.device_of_username(username)
        try:
            ident = self.registry.identity(device_id)
        except Exception:  # noqa: BLE001 - invalid id
            return False
        if ident is None or not ident.enabled:
            return False
        key = ident.primary_key if slot == "primary" else ident.secondary_key
        if not key:
            return False
        return hmac.compare_digest(password, p.mqtt_password(device_id, key))

    def certificate_identity(self, der: bytes | None) -> tuple[str, int] | None:
        """(device id, serial) of a client certificate the TLS handshake verified, or None when
        it is no device certificate, is revoked or on hold in the CRL, or its device is disabled
        or deleted."""
        if not der:
            return None
        try:
            cert = x509.load_der_x509_certificate(der)
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            device_id = p.validate_id(str(names[0].value), "device id") if names else ""
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, x509.ExtensionNotFound, p.ProtocolError):
            return None
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usage or device_id.startswith(p.HUB_USERNAME):
            return None
        if cert.serial_number in self.revoked_serials():
            return None
        ident = self.registry.identity(device_id)
        if ident is None or not ident.enabled:
            return None
        return device_id, cert.serial_number

    def revoked_serials(self) -> set[int]:
        """Serials in the hub CA's CRL (revoked, or held for a disabled/deleted device)."""
        try:
            crl = x509.load_pem_x509_crl(self.ca.crl_file.read_bytes())
        except FileNotFoundError:
            return set()
        return {entry.serial_number for entry in crl}

    def check_iothub(
        self, username: str, client_id: str, password: str, der: bytes | None
    ) -> tuple[iothub.IotHubIdentity, float | None, int | None] | None:
        """(identity, SAS expiry, certificate serial) of an IoT Hub-dialect CONNECT whose SAS
        token (password) or client certificate admits it, else None (logged)."""
        try:
            connect = iothub.parse_connect(username, client_id)
        except p.ProtocolError as exc:
            log.info("refusing an IoT Hub-dialect connection: %s", exc)
            return None
        ident = connect.identity
        found = self.registry.identity(ident.device_id, ident.module_id)
        if found is None or not found.enabled:
            log.info("refusing %s: unknown or disabled identity", ident.client_id)
            return None
        if password:
            try:
                expiry = iothub.verify_device_token(
                    password, connect, (found.primary_key, found.secondary_key), time.time()
                )
            except sas.SasRejected as exc:
                log.info("refusing %s: %s", ident.client_id, exc)
                return None
            return ident, float(expiry), None
        certified = self.certificate_identity(der)
        if certified is None or certified[0] != ident.device_id or ident.module_id is not None:
            log.info("refusing %s: no SAS token and no certificate of it", ident.client_id)
            return None
        return ident, None, certified[1]

    def refused_among(
        self, connections: Iterable[tuple[str, str | None, int | None]]
    ) -> set[tuple[str, str | None, int | None]]:
        """Those of these live connections (device id, module id, certificate serial) that may
        no longer stay. Reads the CRL once and each identity once, however many connect as it."""
        revoked: set[int] | None = None
        enabled: dict[tuple[str, str | None], bool] = {}
        refused: set[tuple[str, str | None, int | None]] = set()
        for device_id, module_id, serial in connections:
            key = (device_id, module_id)
            if key not in enabled:
                ident = self.registry.identity(device_id, module_id)
                enabled[key] = ident is not None and ident.enabled
            if not enabled[key]:
                refused.add((device_id, module_id, serial))
                continue
            if serial is not None:
                if revoked is None:
                    revoked = self.revoked_serials()
                if serial in revoked:
                    refused.add((device_id, module_id, serial))
        return refused
