{{- /*
Upsert of one entity table T from its staged rows (table.Staged: a JSON
parameter read as rows of T): one statement inserts the new rows, updates
the changed ones and clears removed_at of the reappearing ones; unchanged
rows are neither written nor locked.

  cand: the staged rows whose stored row (x) is missing, removed or has
        other values (IS DISTINCT FROM): the only rows the INSERT sees. x
        is found by a LATERAL probe of the key for each staged row (a
        join would be planned as a scan of the whole table when it has no
        statistics yet), or for a table with .Stored by one index range
        scan of the rows the keys can find.
  up:   INSERT ... ON CONFLICT DO UPDATE of those; the WHERE re-checks the
        difference against the row version it locked (a concurrent writer
        may have written the same values meanwhile). With .Merge the values
        are computed again over that row version (see table.Merge).
  chg:  each written row with its change: added (inserted), reappeared
        (its stored row was removed), else changed. Tables without history
        count a reappearance as changed.

  stored (with .Stored): the stored rows the staged keys can find, read
        first (see table.Stored) and joined by a hash.
  gone, rm (with .RemoveStored): the removal, in the same statement, of
        the current rows of stored not staged, whose customer the writer
        may remove rows of (OwnedBy), as in sql/remove.sql.

Then the history (sql/history.sql "closed"/"hist") in the same statement,
returning (change, count) rows; or for a Deferred table, whose history a
later statement writes, the row count and the rows it wrote with their
change (the table's columns and change) as a JSON array, which the
writer passes to the table's history statement (sql/history.sql).
*/ -}}
WITH {{if .Stored}}stored AS (
    {{.Stored}}
), {{end}}cand AS (
    SELECT {{list "s." .Key}}, {{join .Values ", "}}, x.removed_at IS NOT NULL AS was_removed
    FROM {{.Staged}} s
    {{- if .Stored}}
    LEFT JOIN stored x ON {{on "x" "s" .Key}}
    {{- else}}
    LEFT JOIN LATERAL (SELECT * FROM {{.Name}} x WHERE {{on "x" "s" .Key}} LIMIT 1) x ON true
    {{- end}}
    WHERE x.{{index .Key 0}} IS NULL OR x.removed_at IS NOT NULL
       OR ({{list "x." .Cols}}) IS DISTINCT FROM ({{join .Exprs ", "}})
), up AS (
    INSERT INTO {{.Name}} AS t ({{list "" .All}})
    SELECT {{list "cand." .All}} FROM cand ORDER BY {{list "cand." .Key}}
    ON CONFLICT ({{list "" .Key}}) DO UPDATE SET {{assign .Cols .Conflict}}, updated_at = now(), removed_at = NULL
    WHERE ({{list "t." .Cols}}, t.removed_at) IS DISTINCT FROM ({{join .Conflict ", "}}, NULL::timestamptz)
    RETURNING {{list "t." .All}}, t.xmax = 0 AS inserted
), chg AS (
    SELECT {{list "up." .All}},
           CASE WHEN up.inserted THEN 'added'{{if .History}} WHEN cand.was_removed THEN 'reappeared'{{end}} ELSE 'changed' END AS change
    FROM up JOIN cand ON {{on "cand" "up" .Key}}
)
{{- if .RemoveStored}}, gone AS (
    SELECT {{list "t." .Key}} FROM stored t WHERE t.removed_at IS NULL AND {{.OwnedBy}}
    EXCEPT
    SELECT {{list "s." .Key}} FROM {{.Staged}} s
), rm AS (
    UPDATE {{.Name}} t SET removed_at = now(), updated_at = now()
    FROM {{template "keys" (history . "gone")}}
    WHERE {{on "t" "k" .Key}} AND t.removed_at IS NULL AND {{.OwnedByRecheck}}
    RETURNING {{list "t." .All}}, 'removed'::text AS change
){{end}}
{{- if .Deferred}}
SELECT count(*), coalesce(json_agg(w), '[]') FROM (
    SELECT {{list "chg." .All}}, chg.change FROM chg
    {{- if .RemoveStored}}
    UNION ALL
    SELECT {{list "rm." .All}}, rm.change FROM rm{{end}}
) w
{{- else if .History}}{{template "history" (history . "chg")}}
{{- else}}
SELECT change, count(*) FROM chg GROUP BY change
{{- end}}
