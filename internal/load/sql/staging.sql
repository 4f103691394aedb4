{{- /*
The changes tables s_changes_<table> of the Deferred tables (roles, client
links), whose history is written by a separate statement (sql/history.sql)
from the rows the upsert and the removal wrote, as they now are, and their
change. Data: the Deferred tables. (The staged rows themselves are a
parameter of each statement: table.Staged.)

They live as long as the pooled connection, created by the first
transaction that needs them (IF NOT EXISTS: a no-op after that, answered
with a notice), and these statements, run by each transaction before it
writes such a table, empty them: a changes table holds only the rows of the
transaction that uses it, whatever an earlier one on the connection left.
They are not ON COMMIT DELETE ROWS: PostgreSQL then truncates every such
table at the commit of any transaction that touched a temporary table
(8–12 ms per commit here, for every table and its TOAST table, against 0.3
ms). The rows left by the last transaction are deleted instead; a DELETE
leaves the space it frees to be reused or not, so the first statement
returns the tables' size (0 before they exist; asked by name: a scan of
pg_class for the session's temporary relations grows with the database's
catalog), and once they have grown past 16 MB the writer truncates them
(prepareStaging: the cost above, once in many writes).

Plain statements in one simple-protocol round trip, not a DO block: a DO
block is compiled at every call, and loads PL/pgSQL into each new session
(~4 ms of a new session's first write here; BENCHMARKS.md, tenth session).
*/ -}}
SELECT {{range $i, $t := .}}{{if $i}} + {{end}}coalesce(pg_total_relation_size(to_regclass('pg_temp.s_changes_{{.Name}}')), 0){{end}};
{{- range .}}
CREATE TEMP TABLE IF NOT EXISTS s_changes_{{.Name}} AS
    SELECT {{list "" .All}}, ''::text AS change FROM {{.Name}} WITH NO DATA;
{{- end}}
{{- range .}}
DELETE FROM s_changes_{{.Name}};
{{- end}}
{{- /* The truncation prepareStaging runs once they have grown. */ -}}
{{define "truncate staging"}}TRUNCATE {{range $i, $t := .}}{{if $i}}, {{end}}s_changes_{{.Name}}{{end}}{{end}}
