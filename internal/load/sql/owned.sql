{{- /*
The current rows of .Name whose customer is the snapshot's (its Owner
column, one range of the customer's index): the rows the snapshot's
removal decides (invitations, accounts), sorted. The writer removes those
whose key the snapshot does not list (@gone, see table.removeScan).
*/ -}}
SELECT ARRAY(SELECT t.{{index .Key 0}} FROM {{.Name}} t WHERE t.{{.Owner}} = @customer_id AND t.removed_at IS NULL ORDER BY 1)
