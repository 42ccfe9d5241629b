-- 0006_outbox: the outbox and the sent marks in narrow tables of their own.
--
-- Until now an outbound message was the outbox while its `sent_at` was NULL, and sending
-- it updated the archived row: the whole row (the message bytes included) written again,
-- and the outbox index changed twice. Now:
--   outbox      one row per outbound message not yet handed to the transport; written in
--               the transaction that archives the message, deleted when it is sent.
--   sent_marks  when each message was handed to the transport; insert-only.
-- An archived message is never updated again. `messages.sent_at` keeps the marks set
-- before this migration (and a message archived as already sent); a message's sent time
-- is that, else its row in `sent_marks`. Neither table references `messages` by a foreign
-- key: the switch writes them in the transaction that archives or sends the message.

CREATE TABLE outbox (
    message_id TEXT PRIMARY KEY
) WITHOUT ROWID;

CREATE TABLE sent_marks (
    message_id TEXT PRIMARY KEY,
    sent_at    TEXT NOT NULL
) WITHOUT ROWID;

INSERT INTO outbox (message_id)
SELECT id FROM messages WHERE direction = 'out' AND sent_at IS NULL;

DROP INDEX messages_unsent;

DROP TRIGGER messages_only_sent_at;
CREATE TRIGGER messages_no_update BEFORE UPDATE ON messages
BEGIN
    SELECT RAISE(ABORT, 'UPDATE on messages refused: the table is append-only');
END;

CREATE TRIGGER sent_marks_no_update BEFORE UPDATE ON sent_marks
BEGIN
    SELECT RAISE(ABORT, 'UPDATE on sent_marks refused: the table is append-only');
END;
CREATE TRIGGER sent_marks_no_delete BEFORE DELETE ON sent_marks
BEGIN
    SELECT RAISE(ABORT, 'DELETE on sent_marks refused: the table is append-only');
END;
