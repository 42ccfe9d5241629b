-- 0004_batch_files: the batch channel (RULEBOOK §7), files taken from the SFTP drop.
--
-- The same logical schema as PostgreSQL's 0005_batch_files (see there): one row per file
-- taken (accepted or refused), one row per transaction of an accepted file, committed
-- with the engine batch that decided it; (file, index) is what makes a transaction clear
-- at most once. Neither table is ever deleted from.

CREATE TABLE batch_files (
    id          TEXT PRIMARY KEY NOT NULL,
    participant TEXT NOT NULL,
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    msg_id      TEXT,
    tx_count    INTEGER NOT NULL DEFAULT 0 CHECK (tx_count >= 0),
    state       TEXT NOT NULL CHECK (state IN ('clearing', 'done', 'refused')),
    reason      TEXT,
    info        TEXT,
    archived    TEXT NOT NULL,
    status_file TEXT,
    received_at TEXT NOT NULL,
    finished_at TEXT,
    CHECK ((state = 'refused') = (reason IS NOT NULL))
);
CREATE UNIQUE INDEX batch_files_msg_id ON batch_files (participant, msg_id)
    WHERE state <> 'refused';
CREATE UNIQUE INDEX batch_files_sha256 ON batch_files (participant, sha256)
    WHERE state <> 'refused';
CREATE INDEX batch_files_unfinished ON batch_files (received_at) WHERE state = 'clearing';

CREATE TABLE batch_items (
    file_id       TEXT NOT NULL REFERENCES batch_files (id),
    idx           INTEGER NOT NULL CHECK (idx >= 0),
    inbound_id    TEXT NOT NULL,
    payment_id    TEXT,
    instr_id      TEXT,
    end_to_end_id TEXT,
    tx_id         TEXT,
    uetr          TEXT,
    status        TEXT,
    reason        TEXT,
    info          TEXT,
    PRIMARY KEY (file_id, idx),
    CHECK ((payment_id IS NULL) = (status IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX batch_items_payment ON batch_items (payment_id) WHERE payment_id IS NOT NULL;

CREATE TRIGGER batch_items_no_update BEFORE UPDATE ON batch_items
BEGIN
    SELECT RAISE(ABORT, 'UPDATE on batch_items refused: the table is append-only');
END;
CREATE TRIGGER batch_items_no_delete BEFORE DELETE ON batch_items
BEGIN
    SELECT RAISE(ABORT, 'DELETE on batch_items refused: the table is append-only');
END;
CREATE TRIGGER batch_files_no_delete BEFORE DELETE ON batch_files
BEGIN
    SELECT RAISE(ABORT, 'DELETE on batch_files refused: nothing is deleted');
END;
