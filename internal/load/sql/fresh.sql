{{- /*
Which values of its FreshBy column (the first key column) each table with
a direct path (see table.FreshBy) has never stored: no history row starts
with that value (a table without history: no entity row). The snapshot's
rows with such a value are new keys with no interval to close, so the
writer COPYs them straight into the entity table (sql/direct.sql) instead
of staging and upserting them. The history alone decides: every row the
syncer writes has its history, and an entity row without any (inserted by
hand) makes the COPY fail on its key (a unique violation), after which the
write is retried by the upsert, as after a concurrent writer's
(freshConflictError). One array per table, sorted, from the array
@p_<table> of the snapshot's values; a table with FreshAfter is looked at
only when that table's array is not empty (roles: only on the customer's
first write; a new user of a known customer goes by the upsert). Each
lookup is a scalar subquery (run per value, never flattened into a join)
ordered by the rest of the key's index, so it is one index probe whatever
the table's statistics say.
*/ -}}
WITH {{range $i, $t := .}}{{if $i}}, {{end}}f_{{$t.Name}} AS (
    SELECT {{if $t.FreshAfter}}CASE WHEN (SELECT cardinality(a) FROM f_{{$t.FreshAfter.Name}}) > 0 THEN {{end}}ARRAY(
        SELECT p.v FROM unnest(@p_{{$t.Name}}::bigint[]) AS p(v)
        {{- if $t.History}}
        WHERE (SELECT true FROM {{$t.History}} h WHERE h.{{$t.FreshBy}} = p.v ORDER BY {{if $t.KeyRest}}{{list "h." $t.KeyRest}}, {{end}}h.valid_from LIMIT 1) IS NULL
        {{- else}}
        WHERE (SELECT true FROM {{$t.Name}} t WHERE t.{{$t.FreshBy}} = p.v{{if $t.KeyRest}} ORDER BY {{list "t." $t.KeyRest}}{{end}} LIMIT 1) IS NULL
        {{- end}}
        ORDER BY 1){{if $t.FreshAfter}} ELSE '{}' END{{end}} AS a
){{end}}
SELECT {{range $i, $t := .}}{{if $i}}, {{end}}(SELECT a FROM f_{{$t.Name}}){{end}}
