"""The batch channel (RULEBOOK §7): files from the SFTP drop cleared through the engine.

Theory of operation. The SFTP server (`sftp_bridge.server`) calls `BatchBridge.completed`
when a bank renames an upload in `/inbox` to its final name; the bridge takes files one
at a time, in the order they were completed, on the engine's event loop:

1. Take: the file gets an id (`F`, its UTC completion time, and a hash of the
   participant, name, time, size and inode: the same id for the same upload after a
   restart). The bank can neither change nor remove a completed file, so it is read
   where it is.
2. Check (`sftp_bridge.batchfile.inspect`, on the bridge's reading thread): schema,
   sender, signature, counts. A refused file is answered at once: a pacs.002 with group
   status RJCT and the reason (or, for bytes that are no pacs.008 batch at all, an
   admi.002), and is recorded REFUSED; nothing in it is cleared.
3. Exactly once: a file whose GrpHdr/MsgId the participant already used (in an earlier
   file or a real-time message) or whose content (SHA-256) it already sent is refused
   DUPL, with the earlier file named. Otherwise it is recorded CLEARING. Once recorded,
   the file moves from `inbox/` to `archive/F<id>.<name>` (a hard link, then the inbox
   name removed), where it stays unchanged.
4. Clear: its transactions are split off in chunks (`[batch] chunk`) and handed to
   the engine (`Engine.submit_batch`), which clears them behind real-time traffic under
   the real-time rules, and records each outcome with the engine batch that decides it.
5. Answer: once every transaction is decided and every payment final (settled,
   rejected, or timed out), the status file (pacs.002, one TxInfAndSts per transaction,
   signed by the switch) is delivered atomically to `outbox/` (kept in `archive/`) and
   the file is recorded DONE.

Crash safety: every step is idempotent and the store says where each file is. At start
the bridge first moves into the archive any file recorded but still in its inbox, then
resumes files recorded CLEARING (their transactions already decided are skipped: none
is handed to the engine twice, and the engine's own duplicate checks stand behind
that), then takes the completed files still in the inboxes (never recorded: taken as
new, with the same id). Status files are delivered under names derived from the file
id, so a delivery repeated after a crash keeps the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from sftp_bridge.batchfile import UNUSABLE, BatchFile, FileRefused, file_sha256, inspect, split
from sftp_bridge.outbox import open_delivery, participant_tree, work_dir
from sftp_bridge.server import is_temporary_name
from switch.core.rules import AgentRef
from switch.engine import Engine
from switch.iso20022 import MessageType, build, views
from switch.iso20022.views import Agent
from switch.metrics import BATCH_FILES
from switch.security.filesig import SGNTR_PLACEHOLDER, sign_file
from switch.store.base import BatchFileRecord, BatchFileState, BatchItemStatus
from switch.transport.base import Delivery

__all__ = ["BatchBridge", "FileOutcome", "status_file_name"]

log = logging.getLogger("rtpswitch.batch")

_POLL: Final = 0.25
T = TypeVar("T")
_PAGE: Final = 5000


def status_file_name(file_id: str, name: str, mtype: MessageType) -> str:
    """The name of the file answering batch file `name` (id `file_id`) in the outbox."""
    return f"{name}.{file_id}.{mtype.value}.xml"


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What became of one batch file: its record and the status file's path."""

    record: BatchFileRecord
    status_file: Path


class BatchBridge:
    """Takes completed batch files and clears them through one running engine."""

    def __init__(self, engine: Engine, root: Path) -> None:
        self.engine = engine
        self.store = engine.store
        self.settings = engine.settings
        self.root = Path(root).absolute()
        self._queue: asyncio.Queue[tuple[str, Path]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._status_ids = 0
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-reader")
        self.outcomes: asyncio.Queue[FileOutcome] = asyncio.Queue()
        """Every file finished (done or refused), for whoever watches the channel."""

    async def _in_reader(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the bridge's reading thread.

        Every lxml parser and tree of the batch channel lives and dies on this one thread:
        lxml's parsers (iterparse included) must not move between threads.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, functools.partial(fn, *args))

    def close(self) -> None:
        """Release the reading thread (after `run` has returned)."""
        self._reader.shutdown(wait=True, cancel_futures=True)

    # --- intake ------------------------------------------------------------------------

    def completed(self, participant: str, path: Path) -> None:
        """The SFTP server's completion callback (any thread): queue the file."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the batch bridge is not running")
        loop.call_soon_threadsafe(self._queue.put_nowait, (participant, Path(path)))

    async def run(self, stop: asyncio.Event) -> None:
        """Resume, then take completed files until `stop` is set."""
        self._loop = asyncio.get_running_loop()
        await self.resume()
        while not stop.is_set():
            getter = asyncio.ensure_future(self._queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                stopper.cancel()
                break
            stopper.cancel()
            participant, path = getter.result()
            try:
                await self.take(participant, path)
            except Exception:
                log.exception("batch file %s of %s could not be taken", path.name, participant)

    async def resume(self) -> list[FileOutcome]:
        """Finish what a stop or crash interrupted (see the module doc), oldest first."""
        finished = []
        records = await self.store.batch_files()
        for record in records:  # recorded, but stopped before the move to the archive
            self._archive(record)
        for record in records:
            if record.state is not BatchFileState.CLEARING:
                continue
            path = self.root / record.participant / "archive" / record.archived
            bf = await self._in_reader(self._inspect, record.participant, path, record)
            if isinstance(bf, FileRefused):  # the archived original no longer reads
                log.error("batch file %s cannot be resumed: %s", record.id, bf.text)
                continue
            finished.append(await self._clear(record, bf))
        for tree in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()):
            inbox = tree / "inbox"
            if inbox.is_dir():
                for entry in sorted(inbox.iterdir(), key=lambda p: p.stat().st_mtime):
                    if entry.is_file() and not is_temporary_name(entry.name):
                        found = await self.take(tree.name, entry)
                        if found is not None:
                            finished.append(found)
        return finished

    async def take(self, participant: str, path: Path) -> FileOutcome | None:
        """Take one completed file from `participant`'s inbox and see it through."""
        tree = participant_tree(self.root, participant)
        path = Path(path)
        if path.parent != tree / "inbox" or not path.is_file() or path.is_symlink():
            log.warning("not a completed file of %s's inbox: %s", participant, path)
            return None
        file_id = _file_id(participant, path)
        log.info("batch file %s of %s taken as %s", path.name, participant, file_id)
        return await self._take(participant, path, file_id)

    def _archive(self, record: BatchFileRecord) -> None:
        """Move a recorded file from the inbox to its place in the archive (idempotent)."""
        tree = self.root / record.participant
        inbox, archived = tree / "inbox" / record.name, tree / "archive" / record.archived
        if not inbox.is_file() or _file_id(record.participant, inbox) != record.id:
            return
        with contextlib.suppress(FileExistsError):
            os.link(inbox, archived)
        os.unlink(inbox)

    # --- the steps ---------------------------------------------------------------------

    def _inspect(
        self, participant: str, path: Path, record: BatchFileRecord | None = None
    ) -> BatchFile | FileRefused:
        p = self.engine.ctx.directory.get(participant)

        def is_sender(header: views.Header) -> bool:
            if header.from_bicfi is None and header.from_member_id is None:
                return False
            agent = AgentRef(bicfi=header.from_bicfi, member_id=header.from_member_id)
            named = self.engine.ctx.resolve(agent)
            return named is not None and p is not None and named.id == p.id

        security = self.engine.security
        at = record.received_at if record is not None else datetime.now(UTC)
        try:
            return inspect(
                path,
                participant,
                is_sender=is_sender,
                verifier=None if security is None else security.verifier,
                at=at,
                max_bytes=self.settings.batch.max_file_bytes,
            )
        except FileRefused as exc:
            # Handed to the event loop's thread: keep no frame (or lxml object) of this one.
            exc.__traceback__ = exc.__context__ = exc.__cause__ = None
            return exc

    async def _take(self, participant: str, inbox: Path, file_id: str) -> FileOutcome:
        """Check, record, archive and clear (or refuse) one completed inbox file."""
        name = inbox.name
        archived = inbox.parent.parent / "archive" / f"{file_id}.{name}"
        received = _received(file_id)
        if self.engine.security is not None:
            self.engine.security.refresh()
        checked = await self._in_reader(self._inspect, participant, inbox)
        size = inbox.stat().st_size
        if isinstance(checked, FileRefused):
            digest = await self._in_reader(file_sha256, inbox)
            record = BatchFileRecord(
                id=file_id,
                participant=participant,
                name=name,
                sha256=digest,
                size=size,
                msg_id=checked.msg_id,
                tx_count=0,
                state=BatchFileState.REFUSED,
                received_at=received,
                archived=archived.name,
                reason=checked.code,
                info=checked.text[:500],
            )
            return await self._refuse(record, checked.created, checked.count)
        record = BatchFileRecord(
            id=file_id,
            participant=participant,
            name=name,
            sha256=checked.sha256,
            size=size,
            msg_id=checked.msg_id,
            tx_count=checked.count,
            state=BatchFileState.CLEARING,
            received_at=received,
            archived=archived.name,
        )
        earlier: BatchFileRecord | None = None
        text: str | None = None
        if (participant, checked.msg_id) in self.engine.msg_ids:
            files = await self.store.batch_files(participant=participant)
            earlier = next(
                (
                    r
                    for r in files
                    if r.msg_id == checked.msg_id and r.state is not BatchFileState.REFUSED
                ),
                None,
            )
            if earlier is None:
                text = f"MsgId {checked.msg_id} was already used by a message of {participant}"
        else:
            earlier = await self.store.batch_file_accept(record)
        if earlier is not None:
            same = "content" if earlier.sha256 == checked.sha256 else "MsgId"
            text = (
                f"duplicate of batch file {earlier.name} ({earlier.id}, taken "
                f"{earlier.received_at:%Y-%m-%dT%H:%M:%SZ}): same {same}"
            )
        if text is not None:
            return await self._refuse(
                replace(record, state=BatchFileState.REFUSED, reason="DUPL", info=text),
                checked.created,
                checked.count,
            )
        self._archive(record)
        log.info("batch file %s: %d transactions to clear", file_id, checked.count)
        return await self._clear(record, dataclasses.replace(checked, path=archived))

    async def _refuse(
        self, record: BatchFileRecord, created: str | None, count: int | None
    ) -> FileOutcome:
        assert record.reason is not None
        BATCH_FILES.labels("refused", record.reason).inc()
        log.info(
            "batch file %s of %s refused %s: %s",
            record.id,
            record.participant,
            record.reason,
            record.info,
        )
        now = datetime.now(UTC)
        if record.reason == UNUSABLE:
            mtype = MessageType.ADMI_002
            document = build.message_reject(
                reference=record.msg_id or record.name,
                reason="FF01",
                rejected_at=now,
                description=f"batch file {record.name} refused: {record.info}",
            )
        else:
            mtype = MessageType.PACS_002
            document = (
                build.status_file_open(
                    msg_id=self._status_msg_id(record.id),
                    created=now,
                    original_msg_id=record.msg_id or record.name,
                    original_created=created,
                    original_count=count,
                    group_status="RJCT",
                    reason=record.reason,
                    additional_info=record.info,
                    instructing_agent=self.engine.switch_by_bicfi,
                    instructed_agent=self._agent(record.participant),
                )
                + build.STATUS_FILE_CLOSE
            )
        name = status_file_name(record.id, record.name, mtype)
        path = await self._in_reader(
            self._deliver, record, name, mtype, lambda: iter((document,)), now
        )
        await self.store.batch_file_refuse(replace(record, status_file=name))
        self._archive(record)
        outcome = FileOutcome(replace(record, status_file=name), path)
        self.outcomes.put_nowait(outcome)
        return outcome

    async def _clear(self, record: BatchFileRecord, bf: BatchFile) -> FileOutcome:
        done = await self.store.batch_item_indices(record.id)
        if done:
            log.info("batch file %s resumes: %d of %d decided", record.id, len(done), bf.count)
        chunk = max(1, self.settings.batch.chunk)
        parts = split(bf, skip=done)
        sender = record.participant

        def next_chunk() -> list[Delivery]:
            out = []
            for index, data in parts:
                out.append(Delivery(sender=sender, data=data, batch=(record.id, index)))
                if len(out) >= chunk:
                    break
            return out

        try:
            while items := await self._in_reader(next_chunk):
                await self.engine.submit_batch(items)
        finally:
            await self._in_reader(parts.close)  # the parser is freed on its own thread
        while True:
            decided, open_ = await self.store.batch_progress(record.id)
            if decided >= bf.count and open_ == 0:
                break
            await asyncio.sleep(_POLL)
        return await self._answer(record, bf)

    async def _answer(self, record: BatchFileRecord, bf: BatchFile) -> FileOutcome:
        now = datetime.now(UTC)
        msg_id = self._status_msg_id(record.id)
        counts: Counter[str] = Counter()
        # The transactions' statuses go to a file page by page (never all in memory);
        # the group status heads the status file, so it is assembled once they are in.
        body = work_dir(self.root) / f"{record.id}.body"
        with open(body, "wb", buffering=1 << 20) as out:
            after = -1
            while page := await self.store.batch_statuses(record.id, after=after, limit=_PAGE):
                counts.update(s.status for s in page)
                chunk = b"".join(_transaction_status(msg_id, s) for s in page)
                await self._in_reader(out.write, chunk)
                after = page[-1].index
        if set(counts) == {"ACSC"}:
            group = "ACSC"
        elif set(counts) == {"RJCT"}:
            group = "RJCT"
        else:
            group = "PART"

        def pieces() -> Iterator[bytes]:
            yield build.status_file_open(
                msg_id=msg_id,
                created=now,
                original_msg_id=bf.msg_id,
                original_created=bf.created,
                original_count=bf.count,
                group_status=group,
                counts=counts,
                instructing_agent=self.engine.switch_by_bicfi,
                instructed_agent=self._agent(record.participant),
            )
            with open(body, "rb") as src:
                while chunk := src.read(1 << 20):
                    yield chunk
            yield build.STATUS_FILE_CLOSE

        name = status_file_name(record.id, record.name, MessageType.PACS_002)
        try:
            path = await self._in_reader(
                self._deliver, record, name, MessageType.PACS_002, pieces, now
            )
        finally:
            body.unlink(missing_ok=True)
        await self.store.batch_file_finish(record.id, name, now)
        BATCH_FILES.labels("cleared", "").inc()
        log.info(
            "batch file %s done: %s (%s)",
            record.id,
            group,
            ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        )
        outcome = FileOutcome(
            replace(record, state=BatchFileState.DONE, status_file=name, finished_at=now), path
        )
        self.outcomes.put_nowait(outcome)
        return outcome

    # --- delivery ----------------------------------------------------------------------

    def _deliver(
        self,
        record: BatchFileRecord,
        name: str,
        mtype: MessageType,
        pieces: Callable[[], Iterable[bytes]],
        now: datetime,
    ) -> Path:
        """Write, sign and deliver a status file (in a worker thread); its outbox path."""
        tree = participant_tree(self.root, record.participant)
        if (tree / "archive" / name).exists():  # delivered before a crash: keep it
            outbox = tree / "outbox" / name
            with contextlib.suppress(FileExistsError):
                os.link(tree / "archive" / name, outbox)
            return outbox
        header = build.header(
            sender=self.engine.switch_by_bicfi,
            receiver=self._agent(record.participant),
            biz_msg_idr=self._status_msg_id(record.id),
            mtype=mtype,
            created=now,
        )
        security = self.engine.security
        if security is not None:
            header = header.replace(b"</AppHdr>", SGNTR_PLACEHOLDER + b"</AppHdr>")
        unsigned = work_dir(self.root) / f"{record.id}.unsigned"
        try:
            with open(unsigned, "wb", buffering=1 << 20) as out:
                out.write(build.business_message(header, b"")[: -len(b"</BizMsg>")])
                for piece in pieces():
                    out.write(piece)
                out.write(b"</BizMsg>")
            with open_delivery(self.root, record.participant, name) as delivery:
                if security is None:
                    with open(unsigned, "rb") as src:
                        while chunk := src.read(1 << 20):
                            delivery.write(chunk)
                else:
                    sign_file(security.signer, unsigned, delivery.write)
        finally:
            with contextlib.suppress(FileNotFoundError):
                unsigned.unlink()
        return delivery.outbox

    def _agent(self, participant: str) -> Agent:
        return Agent(bicfi=participant)

    def _status_msg_id(self, file_id: str) -> str:
        return f"S{file_id[1:]}"


def _transaction_status(msg_id: str, s: BatchItemStatus) -> bytes:
    """A transaction's line of the status file."""
    return build.status_file_transaction(
        status_id=f"{msg_id}-{s.index}",
        status=s.status,
        original_instr_id=s.instr_id,
        original_end_to_end_id=s.end_to_end_id,
        original_tx_id=s.tx_id,
        original_uetr=s.uetr,
        reason=s.reason,
        additional_info=s.info,
        accepted_at=s.updated_at if s.status == "ACSC" else None,
        clearing_ref=s.payment_id,
    )


def _file_id(participant: str, inbox: Path) -> str:
    """The id of a completed inbox file: the same for the same upload across restarts
    (its UTC completion time, then a hash of who sent it, its name, time and size)."""
    st = inbox.stat()
    at = datetime.fromtimestamp(st.st_mtime, UTC)
    key = f"{participant}/{inbox.name}/{st.st_mtime_ns}/{st.st_size}/{st.st_ino}".encode()
    return f"F{at:%Y%m%d%H%M%S}{hashlib.sha256(key).hexdigest()[:8].upper()}"


def _received(file_id: str) -> datetime:
    """When the file with this id was taken (the id starts with its UTC time)."""
    return datetime.strptime(file_id[1:15], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
