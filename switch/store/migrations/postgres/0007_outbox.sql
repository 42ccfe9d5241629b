-- 0007_outbox: the outbox and the sent marks in narrow tables of their own.
--
-- Until now an outbound message was the outbox while its `sent_at` was NULL, and sending
-- it updated the archived row: a new version of the whole row (the message bytes
-- included) and of every index entry, behind a trigger comparing the rows. Now:
--   outbox      one row per outbound message not yet handed to the transport; written in
--               the transaction that archives the message, deleted when it is sent.
--   sent_marks  when each message was handed to the transport; insert-only.
-- An archived message is never updated again. `messages.sent_at` keeps the marks set
-- before this migration (and a message archived as already sent); a message's sent time
-- is that, else its row in `sent_marks`. Neither table references `messages` by a foreign
-- key: the switch writes them in the transaction that archives or sends the message, and
-- a key check per row would cost the commit what this migration saves.

CREATE TABLE outbox (
    message_id text PRIMARY KEY
);

CREATE TABLE sent_marks (
    message_id text PRIMARY KEY,
    sent_at    timestamptz NOT NULL
);

INSERT INTO outbox (message_id)
SELECT id FROM messages WHERE direction = 'out' AND sent_at IS NULL;

DROP INDEX messages_unsent;

DROP TRIGGER messages_only_sent_at ON messages;
DROP FUNCTION messages_only_set_sent_at();
CREATE TRIGGER messages_no_update BEFORE UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TRIGGER sent_marks_append_only BEFORE UPDATE OR DELETE ON sent_marks
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER sent_marks_no_truncate BEFORE TRUNCATE ON sent_marks
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
