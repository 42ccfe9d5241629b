"""The SFTP drop of the batch channel (RULEBOOK §7): the server the banks log in to.

Logins
    One login per participant: the username is the participant's BICFI, authenticated
    only by one of its registered SSH public keys (`publickey`); passwords,
    keyboard-interactive and `none` are refused. Only `session` channels carrying the
    `sftp` subsystem are served (no shell, exec, forwarding). The keys come from a
    mapping participant -> public keys, e.g. read by `load_authorized_keys` from a
    directory holding `<PARTICIPANT>.pub` files of OpenSSH public key lines. The server's
    host key is loaded from a path (an OpenSSH private key, mode 0600, refused when
    group or others may read it) or, when the file is missing, an Ed25519 key is
    generated and saved there with mode 0600.

The participant's tree
    Each participant sees only its own tree `<root>/<PARTICIPANT>/` (created on its first
    session) as `/`, holding exactly `/inbox`, `/outbox` and `/archive`, each a flat
    directory of regular files. Relative paths are taken from `/`. A path with a `..`
    component, a deeper path, a name outside `[A-Za-z0-9._+=@,-]` (1 to 255 characters)
    or a name that is not one of the three directories at the top is refused with
    SFTP permission denied; so are creating a directory, a symlink or a hard link (the
    server does not offer OpenSSH's hardlink extension). Symlinks, FIFOs and other
    non-regular files that appear in a tree are never followed, opened or listed.

Rights
    - `/inbox`: the bank writes only files under a temporary name (starting with `.` or
      ending in `.part` or `.tmp`), may read what is there, and may remove its
      temporary files (to clean up a failed upload), never a completed file.
    - `/outbox`: read-only, except that the bank may remove a file from it, so that it
      can clear what it has fetched (what the switch delivers stays in `/archive`).
    - `/archive`: read-only.
    Attribute changes are refused except access and modification times of a temporary
    file in `/inbox` (clients that preserve times set them); requested permissions are
    ignored: every file is created with mode 0640.

Completed uploads (rename only)
    A file in `/inbox` is complete only when the bank renames it from its temporary name
    to a final name (SSH_FXP_RENAME, or `posix-rename@openssh.com`); writing under a
    final name is refused, so a partial upload (a temporary name, or a connection dropped
    before the rename) is never taken for a complete one. The rename is refused when the
    final name exists (a completed file is never replaced), when the temporary file is
    still open for writing in any session, or when it is over the size limit. After a
    successful rename the server calls `on_complete(participant, path)` exactly once for
    that file, `path` being the absolute path of the completed file under the root. The
    callback runs on the session's thread (not the caller's, not an event loop): it must
    be thread-safe, and should only hand the file over (e.g. with
    `loop.call_soon_threadsafe`). If it raises, the error is logged and the file stays
    where it is.

Limits
    `max_file_size` (bytes, default 64 MiB): a write that would make a file larger is
    refused. `max_sessions_per_participant` (default 4): a further SFTP session of the
    same participant is refused until one ends. `max_connections` (default 64): further
    connections are closed at once. `login_timeout` (default 30 s): a connection not
    authenticated by then is closed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.pkey import UnknownKeyType
from paramiko.server import InteractiveQuery
from paramiko.sftp import (
    SFTP_FAILURE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_PERMISSION_DENIED,
)

__all__ = [
    "AREAS",
    "DEFAULT_MAX_FILE_SIZE",
    "DEFAULT_MAX_SESSIONS",
    "CompletionCallback",
    "SftpServer",
    "is_temporary_name",
    "load_authorized_keys",
    "load_or_create_host_key",
    "parse_public_keys",
]

log = logging.getLogger(__name__)

AREAS: Final = ("inbox", "outbox", "archive")
DEFAULT_MAX_FILE_SIZE: Final = 64 * 1024 * 1024
DEFAULT_MAX_SESSIONS: Final = 4
DEFAULT_MAX_CONNECTIONS: Final = 64
DEFAULT_LOGIN_TIMEOUT: Final = 30.0

BICFI = re.compile(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?")
_NAME = re.compile(r"[A-Za-z0-9._+=@,-]{1,255}")
_TEMP_SUFFIXES = (".part", ".tmp")
_FILE_MODE = 0o640
_DIR_MODE = 0o750
_POLL = 0.05  # seconds between checks of the stop flag and of login deadlines
_JOIN_TIMEOUT = 5.0

CompletionCallback = Callable[[str, Path], None]
"""Called with the participant and the absolute path of a completed `/inbox` file."""


def is_temporary_name(name: str) -> bool:
    """Whether an `/inbox` file name marks an upload still in progress."""
    return name.startswith(".") or name.endswith(_TEMP_SUFFIXES)


# --- keys -----------------------------------------------------------------------------


def parse_public_keys(text: str, source: str = "<keys>") -> list[paramiko.PKey]:
    """The public keys of OpenSSH public key lines (`type base64 [comment]`).

    Blank lines and `#` comments are skipped. authorized_keys options and certificates
    are not supported: such a line, or any line that is not a public key, raises
    ValueError naming `source` and the line number.
    """
    keys: list[paramiko.PKey] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        fields = line.split()
        if len(fields) < 2:
            raise ValueError(f"{where}: not an OpenSSH public key line")
        key_type, encoded = fields[0], fields[1]
        if key_type.endswith("-cert-v01@openssh.com"):
            raise ValueError(f"{where}: certificates are not supported")
        try:
            blob = base64.b64decode(encoded, validate=True)
            key = paramiko.PKey.from_type_string(key_type, blob)
        except (binascii.Error, paramiko.SSHException, UnknownKeyType) as exc:
            raise ValueError(
                f"{where}: not an OpenSSH public key line (options are not supported): {exc}"
            ) from exc
        except Exception as exc:  # malformed key material raises whatever its parser does
            raise ValueError(f"{where}: malformed {key_type} key: {exc}") from exc
        keys.append(key)
    return keys


def load_authorized_keys(directory: Path) -> dict[str, list[paramiko.PKey]]:
    """Participant -> public keys, from `<directory>/<PARTICIPANT>.pub` files.

    Each file holds one or more OpenSSH public key lines (see `parse_public_keys`); a
    file whose lines are all comments leaves its participant without a login. Files
    not ending in `.pub` are ignored; a `.pub` file not named after a BICFI raises
    ValueError.
    """
    authorized: dict[str, list[paramiko.PKey]] = {}
    for path in sorted(Path(directory).glob("*.pub")):
        participant = path.name.removesuffix(".pub")
        if not BICFI.fullmatch(participant):
            raise ValueError(f"{path}: the file name is not <BICFI>.pub")
        authorized[participant] = parse_public_keys(
            path.read_text(encoding="utf-8"), source=str(path)
        )
    return authorized


def load_or_create_host_key(path: Path) -> paramiko.PKey:
    """The server's host key at `path`; a new Ed25519 key saved there (0600) if missing.

    An existing key file that group or others may access is refused (ValueError), as
    OpenSSH's sshd refuses it.
    """
    path = Path(path)
    if not path.exists():
        _create_host_key(path)
    mode = os.stat(path).st_mode
    if mode & 0o077:
        raise ValueError(f"host key {path} is accessible by group or others (chmod 600 it)")
    key = paramiko.PKey.from_path(path)
    if not key.can_sign():
        raise ValueError(f"host key {path} is not a private key")
    return key


def _create_host_key(path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    data = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written in full under a private name, then linked into place: a concurrent reader
    # never sees half a key, and a key another process saved first is kept.
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    log.info("generated the SFTP host key %s", path)


# --- paths ----------------------------------------------------------------------------


class _Refused(Exception):
    """A request refused with an SFTP status code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _resolve(path: str) -> tuple[str | None, str | None]:
    """(area, name) of a path the bank sent; (None, None) is its tree's root."""
    if "\x00" in path:
        raise _Refused(SFTP_PERMISSION_DENIED)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts or len(parts) > 2:
        raise _Refused(SFTP_PERMISSION_DENIED)
    if not parts:
        return None, None
    area = parts[0]
    if area not in AREAS:
        raise _Refused(SFTP_PERMISSION_DENIED)
    if len(parts) == 1:
        return area, None
    name = parts[1]
    if not _NAME.fullmatch(name):
        raise _Refused(SFTP_PERMISSION_DENIED)
    return area, name


def _canonical(path: str) -> str:
    """The absolute form of a path, `..` stopping at the root (it only names a path)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def _status(exc: OSError) -> int:
    if exc.errno in (errno.ELOOP, errno.EACCES, errno.EPERM):
        return SFTP_PERMISSION_DENIED
    if exc.errno == errno.ENOENT:
        return SFTP_NO_SUCH_FILE
    return SFTP_FAILURE


def _attributes(st: os.stat_result, filename: str) -> paramiko.SFTPAttributes:
    attrs = paramiko.SFTPAttributes.from_stat(st, filename)
    # The bank has no business with the server's accounts.
    attrs.st_uid = attrs.st_gid = 0
    return attrs


# --- the server -----------------------------------------------------------------------


class SftpServer:
    """The SFTP drop: a listening socket, one paramiko Transport per connection.

    `start()` binds and serves in background threads; `stop()` closes the listener and
    every connection and joins every thread it started. Usable as a context manager.
    """

    def __init__(
        self,
        root: Path,
        host_key_path: Path,
        authorized: Mapping[str, Sequence[paramiko.PKey]],
        on_complete: CompletionCallback,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        max_sessions_per_participant: int = DEFAULT_MAX_SESSIONS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        login_timeout: float = DEFAULT_LOGIN_TIMEOUT,
    ) -> None:
        if max_file_size < 0 or max_sessions_per_participant < 1 or max_connections < 1:
            raise ValueError("limits must be positive")
        self.root = Path(root).absolute()
        self.host_key_path = Path(host_key_path)
        self.on_complete = on_complete
        self.host = host
        self.max_file_size = max_file_size
        self.max_sessions_per_participant = max_sessions_per_participant
        self.max_connections = max_connections
        self.login_timeout = login_timeout
        self._requested_port = port
        self._lock = threading.Lock()
        self._authorized: dict[str, frozenset[bytes]] = {}
        self.set_authorized(authorized)
        self._sessions: dict[str, int] = {}
        self._writers: dict[tuple[int, int], int] = {}
        self._host_key: paramiko.PKey | None = None
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._stopping = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._connections: dict[threading.Thread, paramiko.Transport | None] = {}

    # configuration

    def set_authorized(self, authorized: Mapping[str, Sequence[paramiko.PKey]]) -> None:
        """Replace the participants' keys; sessions already open are not affected."""
        keys: dict[str, frozenset[bytes]] = {}
        for participant, participant_keys in authorized.items():
            if not BICFI.fullmatch(participant):
                raise ValueError(f"participant {participant!r} is not a BICFI")
            keys[participant] = frozenset(key.asbytes() for key in participant_keys)
        with self._lock:
            self._authorized = keys

    def _key_allowed(self, participant: str, key: paramiko.PKey) -> bool:
        with self._lock:
            return key.asbytes() in self._authorized.get(participant, frozenset())

    # life cycle

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        if self._port is None:
            raise RuntimeError("the SFTP server is not started")
        return self._port

    def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("the SFTP server is already started")
        self._host_key = load_or_create_host_key(self.host_key_path)
        self.root.mkdir(parents=True, exist_ok=True)
        listener = socket.create_server((self.host, self._requested_port))
        listener.settimeout(_POLL)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._stopping.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"sftp-accept-{self._port}", daemon=True
        )
        self._accept_thread.start()
        log.info("SFTP drop listening on %s:%d", self.host, self._port)

    def stop(self) -> None:
        """Close the listener and every connection; join every thread started."""
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join()
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            connections = list(self._connections.items())
        for _, transport in connections:
            if transport is not None:
                transport.close()
        for thread, _ in connections:
            thread.join(_JOIN_TIMEOUT)
            if thread.is_alive():
                log.error("SFTP connection thread %s did not stop", thread.name)

    def __enter__(self) -> SftpServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                sock, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if not self._stopping.is_set():
                    log.exception("SFTP drop: accept failed")
                    time.sleep(_POLL)
                continue
            with self._lock:
                full = len(self._connections) >= self.max_connections
                if not full:
                    thread = threading.Thread(
                        target=self._serve,
                        args=(sock, peer),
                        name=f"sftp-conn-{peer[0]}:{peer[1]}",
                        daemon=True,
                    )
                    self._connections[thread] = None
            if full:
                log.warning("SFTP drop: connection from %s refused, too many open", peer)
                sock.close()
                continue
            thread.start()

    def _serve(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        me = threading.current_thread()
        connection: _Connection | None = None
        transport: paramiko.Transport | None = None
        try:
            transport = paramiko.Transport(sock)
            assert self._host_key is not None
            transport.add_server_key(self._host_key)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._connections[me] = transport
            connection = _Connection(self, transport)
            # Non-blocking form: the login deadline then covers the key exchange too.
            transport.start_server(event=threading.Event(), server=connection)
            deadline = time.monotonic() + self.login_timeout
            while transport.is_alive():
                if not transport.is_authenticated() and time.monotonic() > deadline:
                    log.info("SFTP drop: %s did not log in in time", peer)
                    transport.close()
                transport.join(_POLL)
        except Exception:
            log.exception("SFTP drop: connection from %s failed", peer)
        finally:
            if transport is not None:
                transport.close()
                if transport.is_alive():
                    transport.join(_JOIN_TIMEOUT)
            sock.close()  # a transport never started does not close it
            if connection is not None:
                for handler in connection.handlers:
                    handler.join(_JOIN_TIMEOUT)
            with self._lock:
                self._connections.pop(me, None)

    # shared state of the sessions

    def _acquire_session(self, participant: str) -> bool:
        with self._lock:
            count = self._sessions.get(participant, 0)
            if count >= self.max_sessions_per_participant:
                return False
            self._sessions[participant] = count + 1
            return True

    def _release_session(self, participant: str) -> None:
        with self._lock:
            count = self._sessions.get(participant, 0) - 1
            if count > 0:
                self._sessions[participant] = count
            else:
                self._sessions.pop(participant, None)

    def _prepare_tree(self, participant: str) -> Path:
        tree = self.root / participant
        for directory in (tree, *(tree / area for area in AREAS)):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=_DIR_MODE)
            if not stat.S_ISDIR(os.lstat(directory).st_mode):
                raise OSError(errno.ENOTDIR, "not a directory (or a symlink)", str(directory))
        return tree

    def _complete(self, participant: str, path: Path) -> None:
        log.info("SFTP drop: %s completed %s", participant, path.name)
        try:
            self.on_complete(participant, path)
        except Exception:
            log.exception("SFTP drop: the completion of %s failed", path)


class _Connection(paramiko.ServerInterface):
    """What one SSH connection may do: publickey logins, `sftp` subsystems."""

    def __init__(self, server: SftpServer, transport: paramiko.Transport) -> None:
        self.server = server
        self.transport = transport
        self.handlers: list[threading.Thread] = []

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_none(self, username: str) -> int:
        return AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        return AUTH_FAILED

    def check_auth_interactive(self, username: str, submethods: str) -> int | InteractiveQuery:
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if self.server._key_allowed(username, key):
            return AUTH_SUCCESSFUL
        log.info("SFTP drop: key %s refused for %r", key.fingerprint, username)
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session" and self.transport.is_authenticated():
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        participant = self.transport.get_username()
        if name != "sftp" or not self.transport.is_authenticated() or participant is None:
            return False
        if not self.server._acquire_session(participant):
            log.warning("SFTP drop: %s has too many sessions open", participant)
            return False
        session = _Session(self.server, participant)
        try:
            session.tree = self.server._prepare_tree(participant)
            handler = paramiko.SFTPServer(channel, name, self, _JailedSftp, session=session)
            handler.daemon = True
            handler.start()
        except Exception:
            log.exception("SFTP drop: cannot open a session for %s", participant)
            session.release()
            return False
        self.handlers.append(handler)
        return True


class _Session:
    """One SFTP session of a participant; holds one of its session slots."""

    def __init__(self, server: SftpServer, participant: str) -> None:
        self.server = server
        self.participant = participant
        self.tree = server.root / participant
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.server._release_session(self.participant)

    def real(self, area: str, name: str | None = None) -> Path:
        directory = self.tree / area
        return directory if name is None else directory / name


class _JailedSftp(paramiko.SFTPServerInterface):
    """The SFTP requests of one session, confined to its participant's tree."""

    def __init__(
        self, server: paramiko.ServerInterface, *args: Any, session: _Session, **kwargs: Any
    ) -> None:
        super().__init__(server, *args, **kwargs)
        self.session = session
        self.drop = session.server

    def session_ended(self) -> None:
        self.session.release()

    # reading

    def canonicalize(self, path: str) -> str:
        return _canonical(path)

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        try:
            area, name = _resolve(path)
            if name is not None:
                return SFTP_FAILURE
            if area is None:
                return [_attributes(os.lstat(self.session.real(a)), a) for a in AREAS]
            entries = []
            with os.scandir(self.session.real(area)) as listing:
                for entry in listing:
                    if _NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                        entries.append(_attributes(entry.stat(follow_symlinks=False), entry.name))
            return entries
        except _Refused as refused:
            return refused.code
        except OSError as exc:
            return _status(exc)

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            area, name = _resolve(path)
            if area is None:
                return _attributes(os.lstat(self.session.tree), "/")
            st = os.lstat(self.session.real(area, name))
            if name is not None and not stat.S_ISREG(st.st_mode):
                return SFTP_NO_SUCH_FILE
            return _attributes(st, name or area)
        except _Refused as refused:
            return refused.code
        except OSError as exc:
            return _status(exc)

    def lstat(self, path: str) -> paramiko.SFTPAttributes | int:
        return self.stat(path)

    def readlink(self, path: str) -> str | int:
        return SFTP_PERMISSION_DENIED

    # opening files

    def open(
        self, path: str, flags: int, attr: paramiko.SFTPAttributes
    ) -> paramiko.SFTPHandle | int:
        try:
            area, name = _resolve(path)
            if area is None or name is None:
                return SFTP_PERMISSION_DENIED
            writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC)
            real = self.session.real(area, name)
            # O_NONBLOCK: a FIFO planted in the tree must not hang the session.
            base = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            if not writing:
                fd = os.open(real, os.O_RDONLY | base)
                return self._handle(fd, writing=False, append=False)
            if area != "inbox" or not is_temporary_name(name):
                return SFTP_PERMISSION_DENIED
            with self.drop._lock:
                # Opened and registered under the lock, so that a rename (which checks for
                # writers under the same lock) cannot complete a file still being written.
                fd = os.open(real, flags | base, _FILE_MODE)
                return self._handle(fd, writing=True, append=bool(flags & os.O_APPEND))
        except _Refused as refused:
            return refused.code
        except OSError as exc:
            return _status(exc)

    def _handle(self, fd: int, *, writing: bool, append: bool) -> _FileHandle | int:
        """Wrap an open fd (the server's lock is held when `writing`)."""
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return SFTP_PERMISSION_DENIED
        except OSError as exc:
            os.close(fd)
            return _status(exc)
        key = (st.st_dev, st.st_ino)
        if writing:
            self.drop._writers[key] = self.drop._writers.get(key, 0) + 1
        return _FileHandle(self.drop, fd, key, writing=writing, append=append)

    # changing the tree

    def rename(self, oldpath: str, newpath: str) -> int:
        try:
            old_area, old_name = _resolve(oldpath)
            new_area, new_name = _resolve(newpath)
            if (
                old_area != "inbox"
                or new_area != "inbox"
                or old_name is None
                or new_name is None
                or not is_temporary_name(old_name)
                or is_temporary_name(new_name)
            ):
                return SFTP_PERMISSION_DENIED
            old = self.session.real("inbox", old_name)
            new = self.session.real("inbox", new_name)
            with self.drop._lock:
                st = os.lstat(old)
                if not stat.S_ISREG(st.st_mode):
                    return SFTP_PERMISSION_DENIED
                if (st.st_dev, st.st_ino) in self.drop._writers:
                    log.info(
                        "SFTP drop: %s renamed %s while writing it",
                        self.session.participant,
                        old_name,
                    )
                    return SFTP_FAILURE
                if st.st_size > self.drop.max_file_size:
                    return SFTP_FAILURE
                # link + unlink: atomic, and never replaces an existing (completed) file.
                os.link(old, new, follow_symlinks=False)
                os.unlink(old)
        except _Refused as refused:
            return refused.code
        except OSError as exc:
            return _status(exc)
        self.drop._complete(self.session.participant, new)
        return SFTP_OK

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self.rename(oldpath, newpath)

    def remove(self, path: str) -> int:
        try:
            area, name = _resolve(path)
            if name is None:
                return SFTP_PERMISSION_DENIED
            allowed = area == "outbox" or (area == "inbox" and is_temporary_name(name))
            if area is None or not allowed:
                return SFTP_PERMISSION_DENIED
            real = self.session.real(area, name)
            if not stat.S_ISREG(os.lstat(real).st_mode):
                return SFTP_PERMISSION_DENIED
            os.unlink(real)
            return SFTP_OK
        except _Refused as refused:
            return refused.code
        except OSError as exc:
            return _status(exc)

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        try:
            area, name = _resolve(path)
            if area != "inbox" or name is None or not is_temporary_name(name):
                return SFTP_PERMISSION_DENIED
            real = self.session.real(area, name)
            if not stat.S_ISREG(os.lstat(real).st_mode):
                return SFTP_PERMISSION_DENIED
            return _set_times(real, attr)
        except _Refused as refused:
            return refused.code
        except OSError as exc:
            return _status(exc)

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        return SFTP_PERMISSION_DENIED

    def rmdir(self, path: str) -> int:
        return SFTP_PERMISSION_DENIED

    def symlink(self, target_path: str, path: str) -> int:
        return SFTP_PERMISSION_DENIED


def _set_times(target: Path | int, attr: paramiko.SFTPAttributes) -> int:
    """Apply only access/modification times; a size or owner change is refused."""
    if attr.st_size is not None or attr.st_uid is not None or attr.st_gid is not None:
        return SFTP_PERMISSION_DENIED
    if attr.st_atime is not None and attr.st_mtime is not None:
        times = (attr.st_atime, attr.st_mtime)
        if isinstance(target, int):
            os.utime(target, times)
        else:
            os.utime(target, times, follow_symlinks=False)
    return SFTP_OK


class _FileHandle(paramiko.SFTPHandle):
    """An open file of a session, read and written by offset on its own fd."""

    def __init__(
        self,
        drop: SftpServer,
        fd: int,
        key: tuple[int, int],
        *,
        writing: bool,
        append: bool,
    ) -> None:
        super().__init__()
        self._drop = drop
        self._fd: int | None = fd
        self._key = key
        self._writing = writing
        self._append = append

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        os.close(fd)
        if self._writing:
            with self._drop._lock:
                count = self._drop._writers.get(self._key, 0) - 1
                if count > 0:
                    self._drop._writers[self._key] = count
                else:
                    self._drop._writers.pop(self._key, None)

    def read(self, offset: int, length: int) -> bytes | int:
        if self._fd is None:
            return SFTP_FAILURE
        try:
            return os.pread(self._fd, length, offset)
        except OSError as exc:
            return _status(exc)

    def write(self, offset: int, data: Any) -> int:
        if self._fd is None or not self._writing:
            return SFTP_PERMISSION_DENIED
        view = memoryview(data).cast("B")
        try:
            if self._append:
                offset = os.fstat(self._fd).st_size
            if offset + len(view) > self._drop.max_file_size:
                log.info("SFTP drop: a write past the size limit was refused")
                return SFTP_FAILURE
            done = 0
            while done < len(view):
                done += os.pwrite(self._fd, view[done:], offset + done)
            return SFTP_OK
        except OSError as exc:
            return _status(exc)

    def stat(self) -> paramiko.SFTPAttributes | int:
        if self._fd is None:
            return SFTP_FAILURE
        try:
            return _attributes(os.fstat(self._fd), "")
        except OSError as exc:
            return _status(exc)

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        if self._fd is None or not self._writing:
            return SFTP_PERMISSION_DENIED
        try:
            return _set_times(self._fd, attr)
        except OSError as exc:
            return _status(exc)
