{{- /*
Staging tables, one per entity table and LIKE it (same columns, types,
defaults and key; not its other indexes, which no statement needs: COPY goes
faster without, and the planner, which has no statistics of a staging table,
took them for key probes), plus s_changes_<table> (the written rows as they now are, and their
change) for the tables whose history is written by a separate statement
(sql/history.sql). They live as
long as the pooled connection and are emptied at each commit (or by the
rollback), which saves creating them per snapshot. Data: the tables.
*/ -}}
{{range .}}CREATE TEMP TABLE IF NOT EXISTS {{.Staging}} (LIKE {{.Name}} INCLUDING DEFAULTS, PRIMARY KEY ({{list "" .Key}})) ON COMMIT DELETE ROWS;
{{if .Deferred}}CREATE TEMP TABLE IF NOT EXISTS s_changes_{{.Name}} ON COMMIT DELETE ROWS AS
    SELECT {{list "" .All}}, ''::text AS change FROM {{.Name}} WITH NO DATA;
{{end}}{{end}}
