{{- /*
Soft removal of the current rows of .Name in the snapshot's scope (.From,
.Where on alias t) that it does not stage (NotStaged), whose customer the
writer may remove rows of (OwnedBy, the one removal rule), with their
'removed' history: in the same statement, or for a Deferred table into
s_changes_<table>. A table without history returns ('removed', count).
*/ -}}
WITH rm AS (
    UPDATE {{.Name}} t SET removed_at = now(), updated_at = now()
    {{- if .From}}
    FROM {{.From}}{{end}}
    WHERE t.removed_at IS NULL AND {{.OwnedBy}} AND {{.Where}}
    {{- if .NotStaged}}
      AND NOT EXISTS (SELECT 1 FROM {{.Staging}} s WHERE {{on "s" "t" .Key}}){{end}}
    RETURNING {{list "t." .All}}, 'removed'::text AS change
)
{{- if .Deferred}}{{if .NotStaged}}
INSERT INTO s_changes_{{.Name}} ({{list "" .Key}}, change)
SELECT {{list "rm." .Key}}, rm.change FROM rm
{{- else}}{{template "history" (history .Table "rm")}}{{end}}
{{- else if .History}}{{template "history" (history .Table "rm")}}
{{- else}}
SELECT change, count(*) FROM rm GROUP BY change
{{- end}}
