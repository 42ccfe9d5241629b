"""The SFTP drop of the batch channel, driven by real SFTP clients over loopback."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sftp_bridge.server import (
    SftpServer,
    is_temporary_name,
    load_authorized_keys,
    load_or_create_host_key,
    parse_public_keys,
)

BANK_A = "BANKUS33XXX"
BANK_B = "BANKGB2L"


def make_key(path: Path) -> paramiko.PKey:
    """A new Ed25519 client key, saved at `path` (0600, OpenSSH format)."""
    private = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def public_line(key: paramiko.PKey, comment: str = "") -> str:
    return f"{key.get_name()} {key.get_base64()} {comment}".strip()


class Completions:
    """What `on_complete` was called with (it runs on the server's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[str, Path]] = []

    def __call__(self, participant: str, path: Path) -> None:
        with self._lock:
            self.calls.append((participant, path))


class Drop:
    """One test's keys, key directory and servers."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.root = tmp_path / "drop"
        self.host_key_path = tmp_path / "host" / "ssh_host_ed25519_key"
        self.key_a = make_key(tmp_path / "id_a")
        self.key_a_path = tmp_path / "id_a"
        self.key_b = make_key(tmp_path / "id_b")
        self.key_dir = tmp_path / "keys"
        self.key_dir.mkdir()
        (self.key_dir / f"{BANK_A}.pub").write_text(
            f"# {BANK_A}\n{public_line(self.key_a, 'ops@a')}\n"
        )
        (self.key_dir / f"{BANK_B}.pub").write_text(public_line(self.key_b) + "\n")
        self.completions = Completions()
        self.servers: list[SftpServer] = []

    def start(self, **limits: float) -> SftpServer:
        server = SftpServer(
            self.root,
            self.host_key_path,
            load_authorized_keys(self.key_dir),
            self.completions,
            **limits,  # type: ignore[arg-type]
        )
        self.servers.append(server)
        server.start()
        return server


@pytest.fixture
def drop(tmp_path: Path) -> Iterator[Drop]:
    before = set(threading.enumerate())
    d = Drop(tmp_path)
    try:
        yield d
    finally:
        for server in d.servers:
            server.stop()
    deadline = time.monotonic() + 5
    leftover = [t for t in threading.enumerate() if t not in before]
    for thread in leftover:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert [t.name for t in leftover if t.is_alive()] == []


@pytest.fixture
def server(drop: Drop) -> SftpServer:
    return drop.start()


@contextlib.contextmanager
def transport_to(port: int) -> Iterator[paramiko.Transport]:
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        yield transport
    finally:
        transport.close()
        if transport.is_alive():
            transport.join(5)


@contextlib.contextmanager
def session(port: int, user: str, key: paramiko.PKey) -> Iterator[paramiko.SFTPClient]:
    with transport_to(port) as transport:
        transport.connect(username=user, pkey=key)
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        try:
            yield client
        finally:
            client.close()


def upload(client: paramiko.SFTPClient, path: str, data: bytes) -> None:
    client.putfo(io.BytesIO(data), path)


# --- logins ---------------------------------------------------------------------------


def test_login_with_the_registered_key(drop: Drop, server: SftpServer) -> None:
    with session(server.port, BANK_A, drop.key_a) as client:
        assert sorted(client.listdir("/")) == ["archive", "inbox", "outbox"]
        assert sorted(client.listdir(".")) == ["archive", "inbox", "outbox"]
        assert client.normalize(".") == "/"
        assert client.normalize("../..") == "/"
    for area in ("inbox", "outbox", "archive"):
        assert (drop.root / BANK_A / area).is_dir()
    # The host key was generated, private, and is the one the server presents.
    assert drop.host_key_path.stat().st_mode & 0o777 == 0o600


def test_the_host_key_is_the_saved_one(drop: Drop, server: SftpServer) -> None:
    saved = paramiko.PKey.from_path(drop.host_key_path)
    with transport_to(server.port) as transport:
        transport.connect(username=BANK_A, pkey=drop.key_a)
        assert transport.get_remote_server_key().asbytes() == saved.asbytes()
    assert load_or_create_host_key(drop.host_key_path).asbytes() == saved.asbytes()


@pytest.mark.parametrize(
    ("user", "key_name"),
    [(BANK_A, "key_b"), (BANK_B, "key_a"), ("UNKNUS33", "key_a"), ("../etc", "key_a")],
    ids=["other-banks-key", "swapped", "unknown-user", "path-user"],
)
def test_login_refused_without_the_participants_key(
    drop: Drop, server: SftpServer, user: str, key_name: str
) -> None:
    key = getattr(drop, key_name)
    with transport_to(server.port) as transport, pytest.raises(paramiko.AuthenticationException):
        transport.connect(username=user, pkey=key)


def test_a_key_not_registered_is_refused(drop: Drop, server: SftpServer) -> None:
    stranger = make_key(drop.tmp_path / "id_stranger")
    with transport_to(server.port) as transport, pytest.raises(paramiko.AuthenticationException):
        transport.connect(username=BANK_A, pkey=stranger)


def test_passwords_and_keyboard_interactive_are_refused(server: SftpServer) -> None:
    with transport_to(server.port) as transport, pytest.raises(paramiko.AuthenticationException):
        transport.connect(username=BANK_A, password="secret")
    with transport_to(server.port) as transport:
        transport.start_client(timeout=5)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_interactive(BANK_A, lambda title, instructions, prompts: [])
        assert refused.value.allowed_types == ["publickey"]


def test_a_shell_or_exec_channel_is_refused(drop: Drop, server: SftpServer) -> None:
    with transport_to(server.port) as transport:
        transport.connect(username=BANK_A, pkey=drop.key_a)
        channel = transport.open_session()
        try:
            with pytest.raises(paramiko.SSHException):
                channel.exec_command("id")
        finally:
            channel.close()


# --- completed uploads ----------------------------------------------------------------


@pytest.mark.parametrize("temporary", [".pay.xml", "pay.xml.part", "pay.xml.tmp"])
def test_upload_then_rename_completes_once(drop: Drop, server: SftpServer, temporary: str) -> None:
    data = b"<BizMsg/>" * 1000
    with session(server.port, BANK_A, drop.key_a) as client:
        upload(client, f"/inbox/{temporary}", data)
        assert drop.completions.calls == []
        client.rename(f"/inbox/{temporary}", "/inbox/pay.xml")
        completed = drop.root / BANK_A / "inbox" / "pay.xml"
        assert drop.completions.calls == [(BANK_A, completed)]
        assert completed.is_absolute()
        assert completed.read_bytes() == data
        assert sorted(client.listdir("/inbox")) == ["pay.xml"]
        # The same rename again, or a new upload onto the completed name: refused.
        with pytest.raises(FileNotFoundError):
            client.rename(f"/inbox/{temporary}", "/inbox/pay.xml")
        upload(client, f"/inbox/{temporary}", b"other")
        with pytest.raises(OSError):
            client.rename(f"/inbox/{temporary}", "/inbox/pay.xml")
        assert completed.read_bytes() == data
        # A completed file belongs to the switch; the bank may still read it back.
        with pytest.raises(PermissionError):
            client.remove("/inbox/pay.xml")
        with client.open("/inbox/pay.xml", "rb") as f:
            assert f.read() == data
    assert drop.completions.calls == [(BANK_A, completed)]


def test_relative_paths_and_posix_rename(drop: Drop, server: SftpServer) -> None:
    with session(server.port, BANK_A, drop.key_a) as client:
        client.chdir("inbox")
        upload(client, "batch.xml.part", b"x")
        client.posix_rename("batch.xml.part", "batch.xml")
    assert drop.completions.calls == [(BANK_A, drop.root / BANK_A / "inbox" / "batch.xml")]


def test_an_upload_not_renamed_never_completes(drop: Drop, server: SftpServer) -> None:
    with session(server.port, BANK_A, drop.key_a) as client:
        upload(client, "/inbox/.left.xml", b"whole but never renamed")
    # A connection dropped in the middle of an upload.
    with transport_to(server.port) as transport:
        transport.connect(username=BANK_A, pkey=drop.key_a)
        dropped = paramiko.SFTPClient.from_transport(transport)
        assert dropped is not None
        f = dropped.open("/inbox/.dropped.xml.part", "wb")
        f.write(b"half")
        f.flush()
    server.stop()
    inbox = drop.root / BANK_A / "inbox"
    assert sorted(p.name for p in inbox.iterdir()) == [".dropped.xml.part", ".left.xml"]
    assert drop.completions.calls == []


def test_a_file_still_open_for_writing_cannot_be_completed(drop: Drop, server: SftpServer) -> None:
    with (
        session(server.port, BANK_A, drop.key_a) as writer,
        session(server.port, BANK_A, drop.key_a) as other,
    ):
        f = writer.open("/inbox/.open.part", "wb")
        f.write(b"first half")
        f.flush()
        for client in (writer, other):
            with pytest.raises(OSError):
                client.rename("/inbox/.open.part", "/inbox/open.xml")
        f.write(b" second half")
        f.close()
        other.rename("/inbox/.open.part", "/inbox/open.xml")
    completed = drop.root / BANK_A / "inbox" / "open.xml"
    assert completed.read_bytes() == b"first half second half"
    assert drop.completions.calls == [(BANK_A, completed)]


def test_writing_under_a_final_name_is_refused(drop: Drop, server: SftpServer) -> None:
    with session(server.port, BANK_A, drop.key_a) as client:
        with pytest.raises(PermissionError):
            upload(client, "/inbox/direct.xml", b"x")
        upload(client, "/inbox/.a.part", b"x")
        with pytest.raises(PermissionError):  # a temporary name to another temporary name
            client.rename("/inbox/.a.part", "/inbox/.b.part")
        client.remove("/inbox/.a.part")  # a bank may clean up its partial uploads
        assert client.listdir("/inbox") == []
    assert drop.completions.calls == []


def test_temporary_names() -> None:
    assert is_temporary_name(".x.xml")
    assert is_temporary_name("x.xml.part")
    assert is_temporary_name("x.xml.tmp")
    assert not is_temporary_name("x.xml")
    assert not is_temporary_name("x.partial")


# --- confinement ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "/../x",
        "/../../etc/passwd",
        "/inbox/../../x.part",
        "/inbox/../inbox/.x.part",
        "/inbox/sub/.x.part",
        "/.x.part",
        "/etc/passwd",
        f"/{BANK_B}/inbox/.x.part",
        "/inbox/bad name.part",
    ],
)
def test_paths_outside_the_tree_are_refused(drop: Drop, server: SftpServer, path: str) -> None:
    with session(server.port, BANK_A, drop.key_a) as client:
        with pytest.raises(PermissionError):
            upload(client, path, b"x")
        with pytest.raises(PermissionError):
            client.open(path, "rb")
        with pytest.raises(PermissionError):
            client.stat(path)
        with pytest.raises(PermissionError):
            client.listdir(path)
        with pytest.raises(PermissionError):
            client.rename("/inbox/.x.part", path)
    assert drop.completions.calls == []
    assert not (drop.tmp_path / "x").exists()


def test_another_banks_tree_is_out_of_reach(drop: Drop, server: SftpServer) -> None:
    with session(server.port, BANK_B, drop.key_b) as client:
        upload(client, "/inbox/.b.part", b"bank b's")
    secret = drop.root / BANK_B / "outbox" / "status.xml"
    secret.write_bytes(b"bank b's status")
    with session(server.port, BANK_A, drop.key_a) as client:
        for path in (
            f"/{BANK_B}/outbox/status.xml",
            f"../{BANK_B}/outbox/status.xml",
            f"/outbox/../../{BANK_B}/outbox/status.xml",
        ):
            with pytest.raises(PermissionError):
                client.open(path, "rb")
            with pytest.raises(PermissionError):
                client.remove(path)
        with pytest.raises(PermissionError):
            client.listdir(f"/{BANK_B}")
        with pytest.raises(PermissionError):
            client.listdir("..")
        with pytest.raises(PermissionError):
            client.rename(f"../{BANK_B}/inbox/.b.part", "/inbox/stolen.xml")
    assert secret.read_bytes() == b"bank b's status"
    assert drop.completions.calls == []


def test_symlinks_are_neither_made_nor_followed(drop: Drop, server: SftpServer) -> None:
    outside = drop.tmp_path / "outside.txt"
    outside.write_bytes(b"not the bank's")
    with session(server.port, BANK_A, drop.key_a) as client:
        with pytest.raises(PermissionError):
            client.symlink(str(outside), "/inbox/.link.part")
        with pytest.raises(PermissionError):
            client.symlink("/outbox", "/inbox/.link.part")
        with pytest.raises(PermissionError):
            client.mkdir("/inbox/sub")
        # Symlinks planted in the tree are invisible and never followed.
        tree = drop.root / BANK_A
        (tree / "outbox" / "link.xml").symlink_to(outside)
        (tree / "inbox" / ".planted.part").symlink_to(outside)
        assert client.listdir("/outbox") == []
        assert client.listdir("/inbox") == []
        with pytest.raises(PermissionError):
            client.open("/outbox/link.xml", "rb")
        with pytest.raises(FileNotFoundError):
            client.stat("/outbox/link.xml")
        with pytest.raises(PermissionError):
            client.readlink("/outbox/link.xml")
        with pytest.raises(PermissionError):
            upload(client, "/inbox/.planted.part", b"overwrite")
        with pytest.raises(PermissionError):
            client.rename("/inbox/.planted.part", "/inbox/planted.xml")
        with pytest.raises(PermissionError):
            client.remove("/outbox/link.xml")
    assert outside.read_bytes() == b"not the bank's"
    assert drop.completions.calls == []


def test_outbox_and_archive_are_read_only(drop: Drop, server: SftpServer) -> None:
    with session(server.port, BANK_A, drop.key_a) as client:
        tree = drop.root / BANK_A
        (tree / "outbox" / "status.xml").write_bytes(b"pacs.002")
        (tree / "archive" / "old.xml").write_bytes(b"archived")
        for area in ("outbox", "archive"):
            for name in ("new.xml", ".new.part"):
                with pytest.raises(PermissionError):
                    upload(client, f"/{area}/{name}", b"x")
        with pytest.raises(PermissionError):
            client.open("/outbox/status.xml", "ab")
        with pytest.raises(PermissionError):
            client.rename("/outbox/status.xml", "/outbox/x.xml")
        with pytest.raises(PermissionError):
            client.chmod("/outbox/status.xml", 0o777)
        with client.open("/outbox/status.xml", "rb") as f:
            assert f.read() == b"pacs.002"
        assert client.listdir("/archive") == ["old.xml"]
        with pytest.raises(PermissionError):
            client.remove("/archive/old.xml")
        client.remove("/outbox/status.xml")  # a bank clears what it fetched
        assert client.listdir("/outbox") == []
    assert (tree / "archive" / "old.xml").read_bytes() == b"archived"


# --- limits ---------------------------------------------------------------------------


def test_a_file_over_the_size_limit_is_refused(drop: Drop) -> None:
    server = drop.start(max_file_size=1000)
    with session(server.port, BANK_A, drop.key_a) as client:
        with pytest.raises(OSError):
            upload(client, "/inbox/.big.part", b"x" * 1001)
        assert client.stat("/inbox/.big.part").st_size == 0
        f = client.open("/inbox/.grow.part", "wb")
        f.write(b"x" * 1000)
        f.flush()
        with pytest.raises(OSError):
            f.write(b"y")
            f.flush()
        f.close()
        client.rename("/inbox/.grow.part", "/inbox/grow.xml")
    assert (drop.root / BANK_A / "inbox" / "grow.xml").stat().st_size == 1000
    assert len(drop.completions.calls) == 1


def test_sessions_per_participant_are_limited(drop: Drop) -> None:
    server = drop.start(max_sessions_per_participant=1)
    with session(server.port, BANK_A, drop.key_a):
        with (
            transport_to(server.port) as transport,
            pytest.raises(paramiko.SSHException),
        ):
            transport.connect(username=BANK_A, pkey=drop.key_a)
            paramiko.SFTPClient.from_transport(transport)
        with session(server.port, BANK_B, drop.key_b) as other:  # another bank is not
            assert other.listdir("/inbox") == []
    # The slot comes back once the first session has ended on the server.
    deadline = time.monotonic() + 5
    while True:
        try:
            with session(server.port, BANK_A, drop.key_a) as client:
                assert client.listdir("/inbox") == []
            break
        except paramiko.SSHException:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_connections_not_logged_in_in_time_are_closed(drop: Drop) -> None:
    server = drop.start(login_timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
        assert idle.recv(100).startswith(b"SSH-2.0-")
        started = time.monotonic()
        while idle.recv(100):
            pass
        assert time.monotonic() - started < 3


def test_connections_over_the_limit_are_closed(drop: Drop) -> None:
    server = drop.start(max_connections=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as first:
        assert first.recv(100).startswith(b"SSH-2.0-")
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as second:
            assert second.recv(100) == b""


# --- configuration --------------------------------------------------------------------


def test_authorized_keys_directory(drop: Drop) -> None:
    extra = make_key(drop.tmp_path / "id_a2")
    (drop.key_dir / f"{BANK_A}.pub").write_text(
        f"# two keys during a rotation\n\n{public_line(drop.key_a)}\n{public_line(extra, 'new')}\n"
    )
    (drop.key_dir / "README").write_text("not a key file")
    keys = load_authorized_keys(drop.key_dir)
    assert sorted(keys) == [BANK_B, BANK_A]
    assert [k.asbytes() for k in keys[BANK_A]] == [drop.key_a.asbytes(), extra.asbytes()]
    server = drop.start()
    with session(server.port, BANK_A, extra) as client:
        assert client.listdir("/inbox") == []


@pytest.mark.parametrize(
    "line",
    [
        "ssh-ed25519",
        "ssh-ed25519 not-base64!",
        'from="10.0.0.1" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA',
        "ssh-ed25519-cert-v01@openssh.com AAAA",
        "ssh-unknown AAAA",
    ],
)
def test_malformed_key_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError, match=r"keys\.pub:2"):
        parse_public_keys(f"# comment\n{line}\n", source="keys.pub")


def test_key_files_must_be_named_after_a_bicfi(tmp_path: Path) -> None:
    key = make_key(tmp_path / "id")
    (tmp_path / "bank.pub").write_text(public_line(key))
    with pytest.raises(ValueError, match="BICFI"):
        load_authorized_keys(tmp_path)


def test_a_host_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "host_key"
    key = load_or_create_host_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_host_key(path).asbytes() == key.asbytes()
    path.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_or_create_host_key(path)


def test_participants_must_be_bicfis(drop: Drop) -> None:
    with pytest.raises(ValueError, match="BICFI"):
        SftpServer(drop.root, drop.host_key_path, {"../x": [drop.key_a]}, drop.completions)


# --- OpenSSH's client -----------------------------------------------------------------


def run_openssh_sftp(drop: Drop, port: int, batch: str) -> subprocess.CompletedProcess[str]:
    sftp = shutil.which("sftp")
    assert sftp is not None
    return subprocess.run(
        [
            sftp,
            "-b",
            "-",
            "-F",
            "/dev/null",
            "-i",
            str(drop.key_a_path),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-P",
            str(port),
            f"{BANK_A}@127.0.0.1",
        ],
        input=batch,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        env={**os.environ, "HOME": str(drop.tmp_path)},
        cwd=drop.tmp_path,
    )


@pytest.mark.skipif(shutil.which("sftp") is None, reason="OpenSSH's sftp is not installed")
def test_openssh_sftp_uploads_and_renames(drop: Drop, server: SftpServer) -> None:
    local = drop.tmp_path / "batch.xml"
    local.write_bytes(b"<BizMsg/>\n" * 5000)
    done = run_openssh_sftp(
        drop,
        server.port,
        f"cd inbox\nput {local} .batch.xml.part\nrename .batch.xml.part batch.xml\nls -la /\n",
    )
    assert done.returncode == 0, done.stderr
    completed = drop.root / BANK_A / "inbox" / "batch.xml"
    assert drop.completions.calls == [(BANK_A, completed)]
    assert completed.read_bytes() == local.read_bytes()
    for refused in (
        f"put {local} /inbox/direct.xml",
        "ln /inbox/batch.xml /inbox/.hard.part",
        "ln -s /etc/passwd /inbox/.soft.part",
        "get /../../etc/passwd",
    ):
        done = run_openssh_sftp(drop, server.port, refused + "\n")
        assert done.returncode != 0, refused
    assert sorted(p.name for p in completed.parent.iterdir()) == ["batch.xml"]
    assert len(drop.completions.calls) == 1
