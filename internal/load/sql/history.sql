{{- /*
"keys" is the FROM item k of the keys of the rows of CTE .Src (an added
row too: its entity row may have been deleted by hand, leaving its history
open). It is an unnest of arrays built by subqueries, so the planner counts
a few keys (not the CTE's estimate) and drives probes by them: of an entity
table's primary key (unique: one row a key, whatever the statistics say),
or of a history table's, one key at a time ("opened" below). A join of the
keys with a history table is not enough: without statistics the planner
takes each probe of a one-column key (an invitation's) to match 0.5% of
the table, and while the table is small it plans one sequential scan and
a hash join instead (0.7 ms at 5,000 rows against 0.04 ms;
BENCHMARKS.md, sixth session).
*/ -}}
{{define "keys" -}}
unnest({{range $i, $k := .T.Key}}{{if $i}}, {{end}}ARRAY(SELECT {{$k}} FROM {{$.Src}} ORDER BY {{list "" $.T.Key}}){{end}}) AS k({{list "" .T.Key}})
{{- end}}
{{- /*
"history" appends the rows of CTE .Src (the entity's columns and change) to
the history table of .T: it closes each key's open interval (looked for
only when .T.Historized, if any, says the customer has history: not on its
first write) and opens the new one where the old one ends, recording @run_id
in the table's RunColumn. valid_from stays strictly increasing per key even
when a transaction that started earlier commits later. Ends the statement
with (change, count) rows.

  opened: the row ids (ctid) of the open intervals of the keys, each key's
          looked up by itself (a LATERAL subquery kept apart by OFFSET 0,
          run once per key: the primary key's index, whatever the table's
          statistics say; joined with the keys instead, the history of a
          one-column key such as an invitation's was scanned whole and
          hashed while small and unanalysed).
  closed: the UPDATE of those rows by row id (a TID scan). The WHERE
          re-checks valid_to on the version it locks, as the join on the
          key did: a row another writer closed meanwhile is left alone (a
          TID scan's recheck accepts the newer version of a row it waited
          for; valid_to decides). History rows are never deleted, and a
          row id read in this statement's snapshot names the same row
          version until the statement ends.
*/ -}}
{{define "history"}}, opened AS (
    SELECT ARRAY(
        SELECT o.ctid FROM {{template "keys" .}}
        CROSS JOIN LATERAL (
            SELECT v.ctid FROM {{.T.History}} v WHERE {{on "v" "k" .T.Key}} AND v.valid_to IS NULL OFFSET 0
        ) o) AS tids
), closed AS (
    UPDATE {{.T.History}} h SET valid_to = greatest(now(), h.valid_from + interval '1 microsecond')
    WHERE h.ctid = ANY ((SELECT tids FROM opened)::tid[]) AND h.valid_to IS NULL{{if and .T.Historized (ne .Src "rm")}} AND {{.T.Historized}}{{end}}
    RETURNING {{list "h." .T.Key}}, h.valid_to
), hist AS (
    INSERT INTO {{.T.History}} ({{list "" .T.All}}, valid_from, change, {{.T.RunColumn}})
    SELECT {{list (printf "%s." .Src) .T.All}}, coalesce(closed.valid_to, now()), {{.Src}}.change, @run_id::bigint
    FROM {{.Src}} LEFT JOIN closed ON {{on "closed" .Src .T.Key}}
    ORDER BY {{list (printf "%s." .Src) .T.Key}}
    RETURNING change
)
SELECT change, count(*) FROM hist GROUP BY change
{{- end -}}
{{- /*
The history statement of a Deferred table (roles, see rolesTable): the rows
the upsert and the removal wrote, as they wrote them, with their change
(@changes: the JSON arrays those statements returned, gathered by the
writer and passed back in chunks, changeSet), each key once (the removal
writes keys not staged, the upsert staged ones; and no other transaction
can change a row this one wrote before it ends). It runs after both, so
every row it historizes is locked by this transaction and its snapshot
sees the history of every writer before. PostgreSQL's JSON of those rows
reads back as the same values (times at microseconds, arrays, text).
*/ -}}
WITH chg AS (
    SELECT {{list "c." .All}}, e->>'change' AS change
    FROM json_array_elements(@changes::json) e CROSS JOIN LATERAL json_populate_record(NULL::{{.Name}}, e) c
){{template "history" (history . "chg")}}
