"""A bank's client of the switch's SFTP drop (RULEBOOK §7): upload files, fetch answers.

The bank logs in as its participant id with its registered SSH key. `upload` follows the
drop's completion convention: the bytes go to `/inbox/.<name>.part`, and only once they
are all written is the file renamed to `/inbox/<name>`, which is when the switch takes
it. `wait_for` polls `/outbox` for the switch's answer to a file (status files are named
`<name>.<file id>.<message type>.xml`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

import paramiko

__all__ = ["BatchDropClient"]

_CHUNK: Final = 1 << 20


class BatchDropClient:
    """One SFTP session of a bank on the drop (a context manager)."""

    def __init__(
        self,
        host: str,
        port: int,
        participant: str,
        key: paramiko.PKey | Path,
        *,
        host_key: paramiko.PKey | None = None,
        timeout: float = 30.0,
    ) -> None:
        if isinstance(key, Path):
            key = paramiko.PKey.from_path(key)
        self._ssh = paramiko.SSHClient()
        if host_key is not None:
            name = host if port == 22 else f"[{host}]:{port}"
            self._ssh.get_host_keys().add(name, host_key.get_name(), host_key)
            self._ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:  # trust on first use, as `ssh -o StrictHostKeyChecking=accept-new`
            self._ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        self._ssh.connect(
            host,
            port=port,
            username=participant,
            pkey=key,
            allow_agent=False,
            look_for_keys=False,
            timeout=timeout,
        )
        self.sftp = self._ssh.open_sftp()

    def upload(self, source: Path, name: str | None = None) -> str:
        """Upload the file at `source` to `/inbox/<name>` (default: its own name); `name`."""
        source = Path(source)
        name = name or source.name
        temporary = f"/inbox/.{name}.part"
        with open(source, "rb") as src, self.sftp.open(temporary, "wb") as dst:
            dst.set_pipelined(True)
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
        self.sftp.rename(temporary, f"/inbox/{name}")
        return name

    def answers(self, name: str) -> list[str]:
        """The outbox files answering the file uploaded as `name`."""
        prefix = f"{name}."
        return sorted(f for f in self.sftp.listdir("/outbox") if f.startswith(prefix))

    def wait_for(self, name: str, timeout: float = 300.0, poll: float = 0.2) -> str:
        """The name of the first answer to `name` to land in `/outbox` (TimeoutError)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.answers(name)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer to {name} in /outbox after {timeout:.0f} s")
            time.sleep(poll)

    def fetch(self, name: str, target: Path) -> Path:
        """Download `/outbox/<name>` to `target`."""
        self.sftp.get(f"/outbox/{name}", str(target))
        return Path(target)

    def close(self) -> None:
        self._ssh.close()

    def __enter__(self) -> BatchDropClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
