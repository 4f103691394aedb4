{{- /*
Staging tables, one per entity table and LIKE it (same columns, types and
defaults), without indexes: stage deduplicates the keys, no statement probes
a staging table (each reads it whole: driving probes of the warehouse, or in
an EXCEPT), COPY into it costs about half as much without its key, and the
commit, which empties every staging table, has half as many files to
truncate. Plus s_changes_<table> (the written rows as they now are, and their
change) for the tables whose history is written by a separate statement
(sql/history.sql). They live as
long as the pooled connection and are emptied at each commit (or by the
rollback), which saves creating them per snapshot. Data: the tables.
*/ -}}
{{range .}}CREATE TEMP TABLE IF NOT EXISTS {{.Staging}} (LIKE {{.Name}} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
{{if .Deferred}}CREATE TEMP TABLE IF NOT EXISTS s_changes_{{.Name}} ON COMMIT DELETE ROWS AS
    SELECT {{list "" .All}}, ''::text AS change FROM {{.Name}} WITH NO DATA;
{{end}}{{end}}
