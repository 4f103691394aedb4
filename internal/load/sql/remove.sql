{{- /*
Soft removal of the current rows of .Name in the snapshot's scope (.Scan, the
FROM items giving the rows as alias t, with .Where) that it does not stage
(NotStaged), whose customer the writer may remove rows of (OwnedBy, the one
removal rule), with their 'removed' history: in the same statement, or for a
Deferred table (unless .Now) by a later one, to which it returns the rows
(as sql/upsert.sql does). A table without history returns ('removed',
count).

  gone: the keys of the rows to remove, as the scan finds them, EXCEPT
        the staged keys (a hash or a sort of both sides: the staged rows
        have no index, and no statistics to plan probes of them by).
  rm:   the UPDATE of those rows by their key; the WHERE re-checks removed_at
        and the owner on the row version it locks (a concurrent writer may
        have changed it meanwhile; OwnedByRecheck, so that the key drives).
        The keys come as unnested arrays (see
        "keys" in sql/history.sql), so each is a probe of the primary key
        whatever the statistics of the table say.
*/ -}}
WITH gone AS (
    SELECT {{list "t." .Key}}
    FROM {{.Scan}}
    WHERE t.removed_at IS NULL AND {{.OwnedBy}} AND {{.Where}}
    {{- if .NotStaged}}
    EXCEPT
    SELECT {{list "s." .Key}} FROM {{.Staged}} s{{end}}
), rm AS (
    UPDATE {{.Name}} t SET removed_at = now(), updated_at = now()
    FROM {{template "keys" (history .Table "gone")}}
    WHERE {{on "t" "k" .Key}} AND t.removed_at IS NULL AND {{.OwnedByRecheck}}
    RETURNING {{list "t." .All}}, 'removed'::text AS change
)
{{- if .Deferred}}{{if not .Now}}
SELECT count(*), coalesce(json_agg(w), '[]') FROM (SELECT {{list "rm." .All}}, rm.change FROM rm) w
{{- else}}{{template "history" (history .Table "rm")}}{{end}}
{{- else if .History}}{{template "history" (history .Table "rm")}}
{{- else}}
SELECT change, count(*) FROM rm GROUP BY change
{{- end}}
