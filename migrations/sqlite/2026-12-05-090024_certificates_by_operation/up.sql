-- Every step looks up its operation's certificate by operation_id; without
-- an index each look scanned the whole table, PEM chains and all, so
-- provisions slowed as certificates accumulated.
CREATE INDEX certificates_operation ON certificates(operation_id);
