"""Choosing a device from a `--device` spec, and listing what can be reached.

Specs: None, "" or "host" → the host itself (`LocalDevice`). "HOST:PORT" → a phone over ADB/TCP.
Anything else is a USB serial. "adb" (alias "auto") means `$ANDROID_SERIAL` when set, else the
only USB phone attached. A plain None never reads `$ANDROID_SERIAL`: without `--device`,
profiling stays on the host, so a stray environment variable cannot move a benchmark to a phone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from mobdistill.errors import DeviceError
from mobdistill.runtime.adb_device import AdbDevice, AdbOptions
from mobdistill.runtime.device import Device, LocalDevice

LOG = logging.getLogger(__name__)

HOST_SPECS = ("", "host", "local")
AUTO_SPECS = ("adb", "auto")


@dataclass(frozen=True)
class DeviceInfo:
    """One row of `mobdistill devices`; `state` uses adb's words (device, unauthorized, ...)."""

    serial: str
    kind: str  # "host" or "adb"
    transport: str  # "local", "tcp" or "usb"
    state: str  # "device", "unauthorized", "no permissions", "offline"
    details: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class DeviceList:
    devices: list[DeviceInfo]
    usb_supported: bool
    notes: list[str] = field(default_factory=list)


def open_device(spec: str | None, *, options: AdbOptions | None = None) -> Device:
    """The device named by `spec` (see the module docstring), connected and ready."""
    if spec is None or spec.strip().lower() in HOST_SPECS:
        return LocalDevice()
    spec = spec.strip()
    if spec.lower() in AUTO_SPECS:
        spec = _auto_serial()
    return AdbDevice.open(spec, options=options)


def _auto_serial() -> str:
    serial = os.environ.get("ANDROID_SERIAL", "").strip()
    if serial:
        return serial
    serials, note = usb_serials()
    if len(serials) == 1:
        return serials[0]
    if not serials:
        raise DeviceError("--device adb: $ANDROID_SERIAL is unset and no USB phone was found"
                          f"{'; ' + note if note else ''}. Pass --device SERIAL or HOST:PORT")
    raise DeviceError(f"--device adb: several USB phones ({', '.join(serials)}); pick one "
                      "with --device SERIAL or set $ANDROID_SERIAL")


def usb_serials() -> tuple[list[str], str]:
    """Serials of attached USB ADB devices, and a note when USB cannot be scanned."""
    try:
        from adb_shell.transport.usb_transport import UsbTransport
    except ImportError:
        return [], "USB scanning needs the optional libusb1 package (pip install 'adb-shell[usb]')"
    serials = []
    try:
        for transport in UsbTransport.find_all_adb_devices():
            try:
                serials.append(transport.serial_number)
            except Exception as err:  # noqa: BLE001 - libusb raises many kinds
                LOG.debug("cannot read a USB serial: %s", err)
                serials.append(f"usb:{'-'.join(map(str, transport.port_path))}")
    except Exception as err:  # noqa: BLE001 - no libusb library, no USB bus in a container
        return serials, f"USB scan failed: {err}"
    return serials, ""


def probe(spec: str, *, options: AdbOptions | None = None) -> DeviceInfo:
    """Connect to one ADB device and describe it; failures become a state, not an exception."""
    transport = "tcp" if ":" in spec else "usb"
    try:
        with AdbDevice.open(spec, options=options) as device:
            return DeviceInfo(spec, "adb", device.transport, "device", device.describe())
    except DeviceError as err:
        return DeviceInfo(spec, "adb", transport, err.state, error=str(err))


def list_devices(
    specs: Sequence[str] = (), *, options: AdbOptions | None = None, include_usb: bool = True,
) -> DeviceList:
    """The host, every USB phone found, and each HOST:PORT in `specs` (TCP cannot be scanned)."""
    with LocalDevice() as host:
        rows = [DeviceInfo("host", "host", "local", "device", host.describe())]
    notes: list[str] = []
    serials: list[str] = []
    usb_supported = True
    if include_usb:
        serials, note = usb_serials()
        usb_supported = not note.startswith("USB scanning needs")
        notes += [note] if note else []
    for spec in dict.fromkeys([*serials, *specs]):
        rows.append(probe(spec, options=options))
    return DeviceList(rows, usb_supported, notes)
