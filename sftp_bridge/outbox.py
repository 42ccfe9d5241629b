"""What the switch delivers to a participant's SFTP tree: status files and statements.

A file the switch delivers lands in `<root>/<PARTICIPANT>/outbox/<name>` atomically: it
is written in full under a temporary name in `<root>/.work/` (outside every participant's
tree, on the same file system), flushed to disk, then renamed to its final name in
`archive/` and hard-linked into `outbox/`. A
bank therefore never sees a partial file in `outbox/`, and what the switch delivered stays
in `archive/` after the bank removes its copy from `outbox/`. A delivery is idempotent:
when the final name already exists in `archive/` the earlier file is kept (it is linked
into `outbox/` again only if it is missing there and `relink` is set).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Final

__all__ = [
    "AREAS",
    "Delivery",
    "deliver_bytes",
    "delivered",
    "open_delivery",
    "participant_tree",
    "work_dir",
]

AREAS: Final = ("inbox", "outbox", "archive")
_DIR_MODE: Final = 0o750
_FILE_MODE: Final = 0o640


def participant_tree(root: Path, participant: str) -> Path:
    """`<root>/<participant>` with its three areas, created when missing."""
    tree = Path(root) / participant
    for directory in (tree, *(tree / area for area in AREAS)):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=_DIR_MODE, parents=True)
        if directory.is_symlink() or not directory.is_dir():
            raise NotADirectoryError(f"{directory} is not a directory")
    return tree


def work_dir(root: Path) -> Path:
    """`<root>/.work`: the switch's own scratch space beside the trees (never served)."""
    work = Path(root) / ".work"
    work.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    return work


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Delivery:
    """A file being written for delivery; `commit()` publishes it, `abort()` drops it.

    Usable as a context manager: leaving the block normally commits, an exception aborts.
    """

    def __init__(self, root: Path, participant: str, name: str) -> None:
        if not name or "/" in name or name.startswith(".") or name in ("..",):
            raise ValueError(f"not a deliverable file name: {name!r}")
        self.tree = participant_tree(root, participant)
        self.name = name
        self.final = self.tree / "archive" / name
        self.outbox = self.tree / "outbox" / name
        self.temporary = work_dir(root) / f"{participant}.{name}.tmp"
        fd = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        self.file: BinaryIO = os.fdopen(fd, "wb", buffering=1 << 20)
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return self.file.write(data)

    def commit(self) -> Path:
        """Publish the file in `outbox/` (and keep it in `archive/`); its outbox path."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.final.exists():
            self.temporary.unlink()
        else:
            os.replace(self.temporary, self.final)
        with contextlib.suppress(FileExistsError):
            os.link(self.final, self.outbox)
        _fsync_dir(self.final.parent)
        _fsync_dir(self.outbox.parent)
        return self.outbox

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.temporary.unlink()

    def __enter__(self) -> Delivery:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if exc is None:
            self.commit()
        else:
            self.abort()


def open_delivery(root: Path, participant: str, name: str) -> Delivery:
    """Start writing `name` for `participant` (see `Delivery`)."""
    return Delivery(root, participant, name)


def deliver_bytes(root: Path, participant: str, name: str, data: bytes) -> Path:
    """Deliver `data` as `name` to `participant`'s outbox; the outbox path."""
    with open_delivery(root, participant, name) as d:
        d.write(data)
    return d.outbox


def delivered(root: Path, participant: str, name: str) -> bool:
    """Whether `name` was already delivered to `participant` (it is in its archive)."""
    return (Path(root) / participant / "archive" / name).exists()
