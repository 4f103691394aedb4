{{- /*
The history of the rows the direct path COPYed into .Name (see
sql/fresh.sql): each an 'added' interval from now(), as the upsert would
have written it (no open interval to close: the key was never stored).
They are read back by their FreshBy value (@fresh, one index range per
value, see ranges) and by this transaction's xid: another transaction may have
committed rows with the same value and other keys meanwhile (roles are
written concurrently by several customers), whose history is its own. A
key another transaction wrote too fails the COPY instead (unique
violation), and the write is retried by the upsert. Ends with (change,
count) rows; a table without history counts its rows as added.
*/ -}}
{{- if .History}}
WITH hist AS (
    INSERT INTO {{.History}} ({{list "" .All}}, valid_from, change, run_id)
    SELECT {{list "t." .All}}, now(), 'added', @run_id::bigint
    FROM {{.Name}} t
    WHERE {{rangesOf .Name .FreshBy "@fresh"}} AND t.xmin = pg_current_xact_id()::xid
    ORDER BY {{list "t." .Key}}
    RETURNING change
)
SELECT change, count(*) FROM hist GROUP BY change
{{- end}}
