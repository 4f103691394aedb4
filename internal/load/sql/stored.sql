{{- /*
The stored rows a re-run compares its snapshot with in Go (see readback.go),
read back instead of the whole snapshot being sent: the key, whether the
row is current, and the columns the upsert compares (Cols), in any order
(the comparison finds each row's staged one by its key): a sort of a
customer's 2,000 users costs the server more than reading them. .Where
(on alias t) picks them: users, the customer's rows; roles, those of the
listed users GetUser read (@readable), in the key's order (.Ordered: so
one index scan, whatever the statistics say; see ranges); invitations and
accounts, the snapshot's keys (@keys), each a probe of the primary key
(.From: a LATERAL per key; a few dozen keys, where "= ANY" over a table
without statistics is planned as a scan of the whole table).
*/ -}}
SELECT {{list "t." .T.Key}}, t.removed_at IS NULL AS current, {{list "t." .T.Cols}}
FROM {{if .From}}{{.From}}{{else}}{{.T.Name}} t{{end}}
WHERE {{.Where}}
{{- if .Ordered}}
ORDER BY {{list "t." .T.Key}}{{end}}
