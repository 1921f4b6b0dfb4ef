"""A phone over ADB, without an adb server: `AdbDevice` wraps an injected adb-shell device object.

The transport is chosen once, when the adb-shell object is built: TCP for `host:port`
(Wireless debugging, `adb tcpip 5555`, emulators) and USB for a serial (adb-shell[usb]: the
`libusb1` package and the system libusb, both installed by the default set-up; a machine
without them, or without udev permission for the phone, gets a message with the fix).

Files move over the ADB sync protocol; commands run through `shell:`. Staging is atomic: the
file is pushed to `.<name>.part`, its size (sync STAT) and sha256 (`sha256sum`, else
`toybox sha256sum`) are checked on the device, then it is renamed with `mv`.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import secrets
import shlex
import socket
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from adb_shell import exceptions as adb_errors
from adb_shell.adb_device import AdbDevice as ShellDevice
from adb_shell.auth.keygen import keygen, write_public_keyfile
from adb_shell.auth.sign_cryptography import CryptographySigner
from adb_shell.transport.tcp_transport import TcpTransport

from mobdistill.errors import DeviceError
from mobdistill.runtime.device import DEFAULT_TIMEOUT_S, CommandResult, Device, sha256_file

LOG = logging.getLogger(__name__)

DEFAULT_WORKDIR = "/data/local/tmp/mobdistill"
EXIT_MARK = "@@mobdistill-exit-"  # + a per-run nonce; the run's last line
TIMEOUT_EXIT_CODES = (124, 137, 143)  # toybox/GNU `timeout`: 124, or killed by KILL/TERM
PUSH_MODE = stat.S_IFREG | 0o755  # staged engines must be executable
PRIVATE_MODE = stat.S_IFREG | 0o600  # keys: the shell user only

_LINK_ERRORS = (
    OSError,
    adb_errors.AdbConnectionError,
    adb_errors.AdbTimeoutError,
    adb_errors.TcpTimeoutException,
    adb_errors.InvalidResponseError,
    adb_errors.InvalidChecksumError,
    adb_errors.InvalidCommandError,
    adb_errors.UsbReadFailedError,
    adb_errors.UsbWriteFailedError,
    adb_errors.AdbCommandFailureException,
    adb_errors.PushFailedError,
)


def _usb_errors() -> tuple[type[BaseException], ...]:
    """libusb's error class when USB support is installed: opening a phone that the adb server
    holds, or without udev permission, raises it from adb-shell's connect."""
    try:
        import usb1
    except ImportError:
        return ()
    return (usb1.USBError,)


@dataclass(frozen=True)
class AdbOptions:
    """How to reach and talk to a phone. Every timeout is in seconds."""

    adbkey: Path | None = None  # private key; None = ~/.android/adbkey (shared with `adb`)
    auth_timeout_s: float = 30.0  # time for the user to tap "Allow" on the phone
    transport_timeout_s: float = 10.0  # one socket/USB read or write
    read_timeout_s: float = 30.0  # waiting for one expected ADB packet
    push_retries: int = 1  # a dropped push is retried this many times after reconnecting
    workdir: str = DEFAULT_WORKDIR
    progress: bool | None = None  # push progress bar; None = only on a terminal


def default_adbkey() -> Path:
    return Path.home() / ".android" / "adbkey"


def load_signer(path: Path | None = None) -> CryptographySigner:
    """The RSA signer for `path` (default ~/.android/adbkey), created with mode 0600 if missing.

    The key is the one Google's `adb` uses, so a phone that trusts `adb` trusts us too.
    """
    path = Path(path or default_adbkey())
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".adbkey.", dir=path.parent))  # mode 0700
        try:
            keygen(str(scratch / "adbkey"))
            os.chmod(scratch / "adbkey", 0o600)
            os.replace(scratch / "adbkey", path)
            os.replace(scratch / "adbkey.pub", path.with_name(path.name + ".pub"))
        finally:
            for leftover in scratch.iterdir():
                leftover.unlink()
            scratch.rmdir()
        LOG.info("created ADB key %s (public key %s.pub)", path, path)
    elif not path.with_name(path.name + ".pub").exists():
        write_public_keyfile(str(path), str(path) + ".pub")
    try:
        return CryptographySigner(str(path))
    except (OSError, ValueError) as err:
        raise DeviceError(f"cannot read the ADB key {path}: {err}; move it away to get a new one")


class EofAwareTcpTransport(TcpTransport):
    """adb-shell's TCP transport, but a closed socket fails at once instead of polling empty
    reads until `read_timeout_s` runs out."""

    def bulk_read(self, numbytes, transport_timeout_s):  # noqa: D102 (adb-shell API)
        data = super().bulk_read(numbytes, transport_timeout_s)
        if numbytes and not data:
            raise adb_errors.AdbConnectionError("the device closed the connection")
        return data


def parse_tcp_spec(spec: str) -> tuple[str, int] | None:
    """('host', port) for 'host:port' (or '[v6]:port'), None for a USB serial."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def open_shell_device(spec: str, options: AdbOptions) -> tuple[ShellDevice, str]:
    """The adb-shell object for `spec` and its transport name ('tcp' or 'usb')."""
    tcp = parse_tcp_spec(spec)
    if tcp is not None:
        transport = EofAwareTcpTransport(*tcp)
        return ShellDevice(transport, options.transport_timeout_s), "tcp"
    try:
        from adb_shell.transport.usb_transport import UsbTransport
    except ImportError as err:
        raise DeviceError(
            f"{spec!r} looks like a USB serial, but USB needs the optional libusb1 package "
            "(pip install 'adb-shell[usb]'); or use Wireless debugging and pass HOST:PORT"
        ) from err
    try:
        transport = UsbTransport.find_adb(serial=spec, default_transport_timeout_s=None)
    except adb_errors.UsbDeviceNotFoundError as err:
        raise DeviceError(
            f"no USB device with serial {spec!r}: plug it in, enable USB debugging, and check "
            "`mobdistill devices`"
        ) from err
    except Exception as err:  # noqa: BLE001 - libusb raises its own kinds (access, busy, ...)
        fix = usb_fix(err)
        if fix is None:
            raise DeviceError(f"cannot scan USB for {spec!r}: {err}") from err
        raise DeviceError(f"cannot open {spec}: {fix}", state="no permissions") from err
    return ShellDevice(transport, options.transport_timeout_s), "usb"


def usb_fix(err: BaseException) -> str | None:
    """The fix for libusb's busy/access errors (adb server holding the device, udev rules)."""
    chain = [err, err.__cause__, err.__context__, *getattr(err, "args", ())]
    names = {type(e).__name__ for e in chain if isinstance(e, BaseException)}
    text = " ".join(str(e) for e in chain if e is not None)
    if "USBErrorBusy" in names or "LIBUSB_ERROR_BUSY" in text:
        return ("the USB device is held by another program, usually the adb server: "
                "run `adb kill-server` and try again")
    if "USBErrorAccess" in names or "LIBUSB_ERROR_ACCESS" in text:
        return ("no permission to open the USB device: run `adb kill-server` if adb holds it, "
                "and install the Android udev rules (Debian: android-sdk-platform-tools-common) "
                "or add your user to the plugdev group")
    return None


class _ProgressReader(io.BytesIO):
    """A BytesIO that streams a real file: adb-shell reads it chunk by chunk, and each read
    advances the progress bar and enforces the push deadline."""

    def __init__(self, handle, bar, deadline: float) -> None:
        super().__init__()
        self._handle, self._bar, self._deadline = handle, bar, deadline

    def read(self, size: int | None = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise TimeoutError("push did not finish in time")
        data = self._handle.read(size)
        self._bar.update(len(data))
        return data

    def fileno(self) -> int:
        return self._handle.fileno()


class AdbDevice(Device):
    """A phone (or anything running adbd) reached through adb-shell."""

    def __init__(
        self, shell_device: ShellDevice, serial: str, *, transport: str = "tcp",
        options: AdbOptions | None = None,
    ) -> None:
        self.serial = serial
        self.transport = transport
        self.options = options or AdbOptions()
        self._adb = shell_device
        self._props: dict[str, str] | None = None

    @classmethod
    def open(cls, spec: str, *, options: AdbOptions | None = None) -> AdbDevice:
        """Build the transport for `spec` (HOST:PORT or USB serial) and connect."""
        options = options or AdbOptions()
        shell_device, transport = open_shell_device(spec, options)
        device = cls(shell_device, spec, transport=transport, options=options)
        device.connect()
        return device

    # -- connection ------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the ADB connection (CNXN, AUTH with the adbkey); safe to call again."""
        opts = self.options
        asked = []
        try:
            self._adb.connect(
                rsa_keys=[load_signer(opts.adbkey)],
                transport_timeout_s=opts.transport_timeout_s,
                auth_timeout_s=opts.auth_timeout_s,
                read_timeout_s=opts.read_timeout_s,
                auth_callback=lambda _: asked.append(True),
            )
        except adb_errors.DeviceAuthError as err:
            raise DeviceError(f"{self.serial} requires authorization: {err}",
                              state="unauthorized") from err
        except (*_LINK_ERRORS, *_usb_errors()) as err:
            self._adb.close()
            if asked:
                raise DeviceError(
                    f"{self.serial} is unauthorized: it did not accept our key within "
                    f"{opts.auth_timeout_s:g} s. Unlock the phone and tap Allow on \"Allow USB "
                    f"debugging?\" (key {opts.adbkey or default_adbkey()}.pub), then retry; "
                    "raise --auth-timeout if you need longer", state="unauthorized",
                ) from err
            raise self._connect_error(err) from err

    def _connect_error(self, err: BaseException) -> DeviceError:
        fix = usb_fix(err)
        if fix:
            return DeviceError(f"cannot open {self.serial}: {fix}", state="no permissions")
        if isinstance(err, ConnectionRefusedError):
            return DeviceError(
                f"nothing accepts ADB connections at {self.serial}: check the address and port "
                "(Developer options > Wireless debugging, or `adb tcpip 5555` over USB first)"
            )
        if isinstance(err, socket.gaierror):
            return DeviceError(f"unknown host in {self.serial!r}: use HOST:PORT or a USB serial")
        return DeviceError(
            f"cannot connect to {self.serial}: {err}. Is it awake, on the same network, and "
            "is USB debugging on? (check with `mobdistill devices`)"
        )

    def close(self) -> None:
        self._adb.close()

    def _ensure(self) -> ShellDevice:
        if not self._adb.available:
            LOG.debug("connecting to %s", self.serial)
            self.connect()
        return self._adb

    def _lost(self, err: BaseException, action: str) -> DeviceError:
        """Close the broken connection (the next call reconnects) and explain."""
        self._adb.close()
        fix = usb_fix(err)
        if fix:
            return DeviceError(f"{action} on {self.serial} failed: {fix}")
        return DeviceError(
            f"{action} on {self.serial} failed: the connection was lost or stalled ({err}). "
            "Check the cable or Wi-Fi, keep the phone awake, and retry"
        )

    def _shell(self, command: str, *, timeout_s: float | None = None) -> str:
        adb = self._ensure()
        read_timeout = self.options.read_timeout_s if timeout_s is None else timeout_s
        try:
            return adb.shell(command, read_timeout_s=read_timeout, timeout_s=timeout_s)
        except _LINK_ERRORS as err:
            raise self._lost(err, f"`{command[:60]}`") from err

    # -- identity --------------------------------------------------------------------------
    def props(self) -> dict[str, str]:
        """All system properties (`getprop`), read once."""
        if self._props is None:
            props = {}
            for line in self._shell("getprop").splitlines():
                key, sep, value = line.partition("]: [")
                if sep and key.startswith("[") and value.endswith("]"):
                    props[key[1:]] = value[:-1]
            self._props = props
        return self._props

    def abi(self) -> str:
        abi = self.props().get("ro.product.cpu.abi", "")
        if not abi:
            raise DeviceError(f"{self.serial} reports no ro.product.cpu.abi; is it Android?")
        return abi

    def describe(self) -> dict[str, str]:
        props = self.props()
        soc = props.get("ro.soc.model") or props.get("ro.board.platform") or props.get(
            "ro.hardware", "unknown")
        return {
            "serial": self.serial,
            "kind": "adb",
            "transport": self.transport,
            "model": props.get("ro.product.model", "unknown"),
            "manufacturer": props.get("ro.product.manufacturer", "unknown"),
            "os": f"Android {props.get('ro.build.version.release', '?')}",
            "sdk": props.get("ro.build.version.sdk", "?"),
            "soc": soc,
            "soc_manufacturer": props.get("ro.soc.manufacturer", "unknown"),
            "board_platform": props.get("ro.board.platform", "unknown"),
            "abi": self.abi(),
            "abilist": props.get("ro.product.cpu.abilist", ""),
        }

    def workdir(self) -> str:
        return self.options.workdir

    # -- files -----------------------------------------------------------------------------
    def stage(self, local: Path, remote_name: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
              private: bool = False) -> str:
        local = Path(local)
        if not local.is_file():
            raise DeviceError(f"cannot stage {local}: no such file")
        remote = posixpath.join(self.workdir(), remote_name)
        folder, name = posixpath.split(remote)
        part = posixpath.join(folder, f".{name}.part")
        digest, size = sha256_file(local), local.stat().st_size
        self._shell(f"mkdir -p {shlex.quote(folder)}")
        if not private and self._remote_sha256(remote) == digest:
            LOG.debug("%s already staged on %s", remote, self.serial)
            return remote
        mode = PRIVATE_MODE if private else PUSH_MODE
        for attempt in range(self.options.push_retries + 1):
            try:
                self._push(local, part, size, timeout_s, mode)
                break
            except DeviceError as err:
                if attempt == self.options.push_retries:
                    raise
                LOG.warning("%s; retrying the push (%d left)", err,
                            self.options.push_retries - attempt)
        self._verify(part, size, digest, source=local)
        self._shell(f"mv -f {shlex.quote(part)} {shlex.quote(remote)}")
        return remote

    def _push(self, local: Path, remote: str, size: int, timeout_s: float, mode: int) -> None:
        from tqdm import tqdm

        adb = self._ensure()
        bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"push {local.name}",
                   disable=None if self.options.progress is None else not self.options.progress,
                   leave=False)
        try:
            with open(local, "rb") as handle, bar:
                reader = _ProgressReader(handle, bar, time.monotonic() + timeout_s)
                adb.push(reader, remote, st_mode=mode,
                         read_timeout_s=self.options.read_timeout_s)
        except TimeoutError as err:
            raise self._lost(err, f"pushing {local.name} (over {timeout_s:g} s)") from err
        except _LINK_ERRORS as err:
            raise self._lost(err, f"pushing {local.name}") from err

    def _remote_sha256(self, remote: str) -> str | None:
        quoted = shlex.quote(remote)
        out = self._shell(
            f"[ -f {quoted} ] && {{ sha256sum {quoted} 2>/dev/null || toybox sha256sum {quoted}; }}"
        )
        word = out.split()[0] if out.split() else ""
        return word.lower() if len(word) == 64 else None

    def _verify(self, remote: str, size: int, digest: str, *, source: Path) -> None:
        try:
            remote_size = self._ensure().stat(remote, read_timeout_s=self.options.read_timeout_s)[1]
        except _LINK_ERRORS as err:
            raise self._lost(err, f"checking {remote}") from err
        remote_digest = self._remote_sha256(remote)
        if remote_size == size % 2**32 and remote_digest == digest:
            return
        self._shell(f"rm -f {shlex.quote(remote)}")
        if remote_digest is None:
            raise DeviceError(f"{self.serial} has neither sha256sum nor toybox sha256sum; "
                              f"cannot verify the staged copy of {source}")
        raise DeviceError(
            f"the copy of {source} on {self.serial} is corrupt (size {remote_size} vs {size}, "
            f"sha256 {remote_digest} vs {digest}); removed it, stage again"
        )

    def remove(self, remote: str) -> None:
        self._shell(f"rm -f {shlex.quote(remote)}")

    def fetch(self, remote: str, local: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        local = Path(local)
        adb = self._ensure()
        try:
            mode, size, _ = adb.stat(remote, read_timeout_s=self.options.read_timeout_s)
        except _LINK_ERRORS as err:
            raise self._lost(err, f"stat {remote}") from err
        if not stat.S_ISREG(mode):
            raise DeviceError(f"cannot fetch {remote}: no such file on {self.serial}")
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        os.close(fd)
        try:
            adb.pull(remote, tmp, read_timeout_s=min(timeout_s, self.options.read_timeout_s))
            got = Path(tmp).stat().st_size
            if got % 2**32 != size:
                raise DeviceError(f"fetched {got} bytes of {remote}, expected {size}; retry")
            os.replace(tmp, local)
        except _LINK_ERRORS as err:
            raise self._lost(err, f"fetching {remote}") from err
        finally:
            Path(tmp).unlink(missing_ok=True)

    # -- commands --------------------------------------------------------------------------
    def run(self, argv: list[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        """Run `argv` in workdir (LD_LIBRARY_PATH=workdir). The device's `timeout` kills it.

        stdout and stderr go to separate files on the device; the reply is stdout, a line
        `EXIT_MARK<nonce>:stderr`, stderr, and last a line `EXIT_MARK<nonce>=<rc>`. The nonce is
        new for every run and nothing the command prints can follow the last line, so output
        that imitates a marker (a file name, say) is read as output."""
        if not argv:
            raise DeviceError("run needs a command")
        nonce = secrets.token_hex(8)
        wd = shlex.quote(self.workdir())
        out, err = (shlex.quote(posixpath.join(self.workdir(), f".run.{nonce}.{k}"))
                    for k in ("out", "err"))
        command = " ".join(shlex.quote(arg) for arg in argv)
        script = (
            f"mkdir -p {wd} && cd {wd} && LD_LIBRARY_PATH={wd} "
            f"timeout -k 2 {max(int(timeout_s + 0.999), 1)} {command} >{out} 2>{err}; "
            f"rc=$?; cat {out} 2>/dev/null; printf '\\n{EXIT_MARK}{nonce}:stderr\\n'; "
            f"cat {err} 2>/dev/null; printf '\\n{EXIT_MARK}{nonce}=%d\\n' $rc; "
            f"rm -f {out} {err}"
        )
        start = time.monotonic()
        adb = self._ensure()
        try:
            reply = adb.shell(script, read_timeout_s=timeout_s + 15, timeout_s=timeout_s + 15)
        except adb_errors.AdbTimeoutError:
            self._adb.close()  # closing the stream makes adbd kill the command
            return CommandResult(-9, "", f"no answer from {self.serial} in {timeout_s:g} s",
                                 timed_out=True)
        except _LINK_ERRORS as err:
            raise self._lost(err, f"running {argv[0]}") from err
        return self._parse_run(reply, nonce, timeout_s, time.monotonic() - start)

    def _parse_run(self, reply: str, nonce: str, timeout_s: float,
                   elapsed_s: float) -> CommandResult:
        body, sep, code_text = reply.rpartition(f"\n{EXIT_MARK}{nonce}=")
        stdout, split, stderr = body.partition(f"\n{EXIT_MARK}{nonce}:stderr\n")
        code_text = code_text.strip()
        if not sep or not split or not code_text.lstrip("-").isdigit():
            raise DeviceError(
                f"{self.serial} ended the command without an exit status (adbd restarted or the "
                f"connection dropped?); output so far: {reply[-300:]!r}")
        exit_code = int(code_text)
        if exit_code == 127 and "timeout" in stderr and "not found" in stderr:
            raise DeviceError(f"{self.serial} has no `timeout` command (needs Android 7+)")
        timed_out = exit_code in TIMEOUT_EXIT_CODES and elapsed_s >= timeout_s - 0.5
        return CommandResult(exit_code, stdout, stderr, timed_out=timed_out)
