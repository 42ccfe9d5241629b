-- 0008_file_transactions: the inbound transactions split from batch files, marked.
--
-- Each transaction of a batch file is archived as an inbound message of its own. None of
-- them is a resend candidate on its own (a file is refused as a resend as a whole, by its
-- MsgId or its content hash), yet each took an entry, at a random place, in the index of
-- inbound message hashes. `batch_file` names the file a transaction came from; the index
-- now holds only messages that came on their own. Transactions archived before this
-- migration keep NULL (they stay in the index, as before).

ALTER TABLE messages ADD COLUMN batch_file text;

DROP INDEX messages_inbound_hash;
CREATE INDEX messages_inbound_hash ON messages (participant, sha256)
    WHERE direction = 'in' AND batch_file IS NULL;
