{{- /*
Staging tables, one per entity table and LIKE it (same columns, types and
defaults), without indexes: stage deduplicates the keys, no statement probes
a staging table (each reads it whole: driving probes of the warehouse, or in
an EXCEPT), and COPY into it costs about half as much without its key. Plus
s_changes_<table> (the written rows as they now are, and their change) for
the tables whose history is written by a separate statement
(sql/history.sql). Data: the tables.

They live as long as the pooled connection, created by the first
transaction that needs them, and this statement, run by each transaction
before it stages anything, empties them: a staging table holds only the
rows of the transaction that uses it, whatever an earlier one on the
connection left. They are not ON COMMIT DELETE ROWS: PostgreSQL then
truncates every such table at the commit of any transaction that touched a
temporary table (8–12 ms per commit here, for every staging table and its
TOAST table and index, against 0.3 ms). The rows left by the last
transaction are deleted instead; a DELETE leaves the space it frees to be
reused or not, so once these staging tables (with their TOAST tables) have
grown past 16 MB they are truncated (the cost above, once in many writes).
Their sizes are asked by name: a scan of pg_class for the session's
temporary relations grows with the database's catalog (9.7 ms a write with
600 schemas).
*/ -}}
DO $staging$
BEGIN
    IF {{range $i, $t := .}}{{if $i}} OR {{end}}to_regclass('pg_temp.{{.Staging}}') IS NULL{{if .Deferred}} OR to_regclass('pg_temp.s_changes_{{.Name}}') IS NULL{{end}}{{end}} THEN
{{- range .}}
        CREATE TEMP TABLE IF NOT EXISTS {{.Staging}} (LIKE {{.Name}} INCLUDING DEFAULTS);
{{- if .Deferred}}
        CREATE TEMP TABLE IF NOT EXISTS s_changes_{{.Name}} AS
            SELECT {{list "" .All}}, ''::text AS change FROM {{.Name}} WITH NO DATA;
{{- end}}{{end}}
    END IF;
    IF {{range $i, $t := .}}{{if $i}} + {{end}}pg_total_relation_size('pg_temp.{{.Staging}}'::regclass){{if .Deferred}} + pg_total_relation_size('pg_temp.s_changes_{{.Name}}'::regclass){{end}}{{end}} > 16 * 1024 * 1024 THEN
        TRUNCATE {{range $i, $t := .}}{{if $i}}, {{end}}{{.Staging}}{{if .Deferred}}, s_changes_{{.Name}}{{end}}{{end}};
    ELSE
{{- range .}}
        DELETE FROM {{.Staging}};
{{- if .Deferred}}
        DELETE FROM s_changes_{{.Name}};
{{- end}}{{end}}
    END IF;
END
$staging$
