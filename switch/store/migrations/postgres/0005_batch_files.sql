-- 0005_batch_files: the batch channel (RULEBOOK §7), files taken from the SFTP drop.
--
-- A batch file is recorded when the switch takes it: accepted ('clearing', then 'done'
-- once its status file is in the participant's outbox) or refused whole ('refused', with
-- the reason of its status file). An accepted file's MsgId and content hash are unique per
-- participant: a re-sent file is refused DUPL. Each transaction of an accepted file gets
-- one batch_items row, committed with the engine batch that decided it: the payment it
-- became, or the status it was refused with before it could become one (DUPL, FF01).
-- The primary key (file, index) is what makes a transaction clear at most once, even when
-- a file is resumed after a crash. Neither table is ever deleted from.

CREATE TABLE batch_files (
    id          text PRIMARY KEY,
    participant text NOT NULL,
    name        text NOT NULL,
    sha256      text NOT NULL,
    size        bigint NOT NULL CHECK (size >= 0),
    msg_id      text,
    tx_count    integer NOT NULL DEFAULT 0 CHECK (tx_count >= 0),
    state       text NOT NULL CHECK (state IN ('clearing', 'done', 'refused')),
    reason      text,
    info        text,
    archived    text NOT NULL,
    status_file text,
    received_at timestamptz NOT NULL,
    finished_at timestamptz,
    CHECK ((state = 'refused') = (reason IS NOT NULL))
);
CREATE UNIQUE INDEX batch_files_msg_id ON batch_files (participant, msg_id)
    WHERE state <> 'refused';
CREATE UNIQUE INDEX batch_files_sha256 ON batch_files (participant, sha256)
    WHERE state <> 'refused';
CREATE INDEX batch_files_unfinished ON batch_files (received_at) WHERE state = 'clearing';

CREATE TABLE batch_items (
    file_id       text NOT NULL REFERENCES batch_files (id),
    idx           integer NOT NULL CHECK (idx >= 0),
    inbound_id    text NOT NULL,
    payment_id    text,
    instr_id      text,
    end_to_end_id text,
    tx_id         text,
    uetr          text,
    status        text,
    reason        text,
    info          text,
    PRIMARY KEY (file_id, idx),
    CHECK ((payment_id IS NULL) = (status IS NOT NULL))
);
CREATE INDEX batch_items_payment ON batch_items (payment_id) WHERE payment_id IS NOT NULL;

CREATE TRIGGER batch_items_append_only BEFORE UPDATE OR DELETE ON batch_items
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER batch_files_no_delete BEFORE DELETE ON batch_files
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
