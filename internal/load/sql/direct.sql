{{- /*
The history of the rows the direct path COPYed into .Name (see
sql/fresh.sql): each an 'added' interval from now(), as the upsert would
have written it (no open interval to close: the key was never stored).
They are read back by their FreshBy value (@fresh, one index range per
value, see ranges) and by this transaction's xid: another transaction may have
committed rows with the same value and other keys meanwhile (roles are
written concurrently by several customers), whose history is its own. A
key another transaction wrote too fails the COPY instead (unique
violation), and the write is retried by the upsert. Every row it writes
is 'added': the writer counts the statement's rows (a table without
history counts the rows COPYed). No ORDER BY: the rows come back in the
order the COPY wrote them, the key's.
*/ -}}
{{- if .History}}
INSERT INTO {{.History}} ({{list "" .All}}, valid_from, change, run_id)
SELECT {{list "t." .All}}, now(), 'added', @run_id::bigint
FROM {{.Name}} t
WHERE {{rangesOf .Name .FreshBy "@fresh"}} AND t.xmin = pg_current_xact_id()::xid
{{- end}}
