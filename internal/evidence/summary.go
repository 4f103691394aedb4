package evidence

import (
	"cmp"
	"html/template"
	"io"
	"slices"
	"strconv"

	"github.com/msads-syncer/syncer/internal/load"
)

// summaryLimit bounds the rows of one list in summary.html; the CSV files
// hold them all.
const summaryLimit = 500

// summaryData is what summary.html shows.
type summaryData struct {
	M *Manifest
	// Populations are the columns of the counts table; Counts its rows.
	Populations []string
	Counts      []countRow
	Totals      []int
	Failed      int
	Privileged  table
	Exceptions  table
	Diff        table
	DiffCounts  []diffCount
	HasDiff     bool
}

type countRow struct {
	CustomerID string
	Name       string
	Run        string
	Counts     []int
}

// table is a list shown in the summary: its header and (at most
// summaryLimit) rows of text, or why it is not there.
type table struct {
	Available bool
	Missing   string
	Columns   []string
	Rows      [][]string
	Total     int
	File      string
}

type diffCount struct {
	Kind, Change string
	N            int
}

func writeSummary(w io.Writer, m *Manifest, ev *load.Evidence) error {
	d := summaryData{M: m, Failed: len(m.FailedChecks()), HasDiff: m.Since != ""}
	names := map[string]string{}
	runs := map[string]string{}
	for _, c := range m.Customers {
		id := strconv.FormatInt(c.CustomerID, 10)
		names[id] = c.Name
		if c.RunID != 0 {
			runs[id] = "run " + strconv.FormatInt(c.RunID, 10) + ", " + c.CompletedAt
		} else {
			runs[id] = "no complete sync"
		}
	}
	ids := map[string]bool{}
	for id := range names {
		ids[id] = true
	}
	var csvFiles []File
	for _, f := range m.Files {
		if f.Format == "csv" && f.Population != "review_diff" {
			csvFiles = append(csvFiles, f)
			d.Populations = append(d.Populations, f.Population)
			for id := range f.RowsPerCustomer {
				ids[id] = true
			}
		}
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	slices.SortFunc(sorted, func(a, b string) int {
		x, _ := strconv.ParseInt(a, 10, 64)
		y, _ := strconv.ParseInt(b, 10, 64)
		return cmp.Compare(x, y)
	})
	d.Totals = make([]int, len(csvFiles))
	for _, id := range sorted {
		r := countRow{CustomerID: id, Name: names[id], Run: cmp.Or(runs[id], "no sync of its own")}
		if id == "" {
			r.CustomerID, r.Run = "(not known)", "links whose client customer is not known"
		}
		for i, f := range csvFiles {
			n := f.RowsPerCustomer[id]
			r.Counts = append(r.Counts, n)
			d.Totals[i] += n
		}
		d.Counts = append(d.Counts, r)
	}
	d.Privileged = populationTable(ev, "privileged_access")
	d.Exceptions = populationTable(ev, "exceptions")
	if d.HasDiff {
		cols, rows := DiffRows(ev.Changes)
		d.Diff = textTable(cols, rows, DiffFile)
		counts := map[[2]string]int{}
		for _, c := range ev.Changes {
			counts[[2]string{c.Entity, c.Change}]++
		}
		for k, n := range counts {
			d.DiffCounts = append(d.DiffCounts, diffCount{k[0], k[1], n})
		}
		slices.SortFunc(d.DiffCounts, func(a, b diffCount) int {
			return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Change, b.Change))
		})
	}
	return summaryTemplate.Execute(w, d)
}

func populationTable(ev *load.Evidence, name string) table {
	for _, p := range ev.Populations {
		if p.Name != name {
			continue
		}
		if p.Missing != "" {
			return table{Missing: p.Missing}
		}
		return textTable(p.Columns, p.Rows, name+".csv")
	}
	return table{Missing: "this version of the syncer has no " + name + " population"}
}

func textTable(cols []string, rows [][]any, file string) table {
	t := table{Available: true, Columns: cols, Total: len(rows), File: file}
	for i, r := range rows {
		if i == summaryLimit {
			break
		}
		cells := make([]string, len(r))
		for j, v := range r {
			cells[j] = Cell(v)
		}
		t.Rows = append(t.Rows, cells)
	}
	return t
}

// summaryTemplate is summary.html: one page with its style inline, no
// script and no external asset, readable on paper.
var summaryTemplate = template.Must(template.New("summary").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Access review evidence as of {{.M.AsOf}}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #eee; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #060; font-weight: bold; } .fail { color: #b00; font-weight: bold; }
.note { color: #444; } code { font-size: .9em; word-break: break-all; }
@media print { body { margin: 0; font-size: 10pt; } section { break-inside: avoid-page; } thead { display: table-header-group; } }
</style>
</head>
<body>
<h1>Access review evidence</h1>
<section id="overview">
<table>
<tr><th>As of</th><td id="as-of">{{.M.AsOf}}</td></tr>
{{if .M.Since}}<tr><th>Changes since</th><td id="since">{{.M.Since}}</td></tr>{{end}}
<tr><th>Generated</th><td>{{.M.GeneratedAt}} by {{.M.Tool.Name}} {{.M.Tool.Version}} {{.M.Tool.Commit}}</td></tr>
<tr><th>Database</th><td>{{.M.Database.Name}}, PostgreSQL {{.M.Database.ServerVersion}}, schema {{.M.Database.Schema}} (version {{.M.Database.SchemaVersion}}), {{.M.Database.Transaction}}</td></tr>
<tr><th>Read as</th><td>{{range .M.Credential.Principals}}{{.UserName}} (user {{.UserID}}), runs {{range $i, $r := .Runs}}{{if $i}}, {{end}}{{$r}}{{end}}<br>{{else}}no sync supplied data{{end}}</td></tr>
<tr><th>Checks</th><td id="checks-result" class="{{if .Failed}}fail{{else}}pass{{end}}">{{if .Failed}}{{.Failed}} of {{len .M.Checks}} checks failed{{else}}all {{len .M.Checks}} checks passed{{end}}</td></tr>
<tr><th>Gaps</th><td id="gaps-result" class="{{if .M.Gaps}}fail{{else}}pass{{end}}">{{if .M.Gaps}}{{len .M.Gaps}} customers without complete data{{else}}none{{end}}</td></tr>
</table>
<p class="note">The files of this pack, their SQL, row counts and SHA-256 are in manifest.json; <code>syncer evidence verify DIR</code> checks them.</p>
</section>

<section id="counts">
<h2>Counts per customer</h2>
<table>
<thead><tr><th>customer</th><th>name</th><th>data from</th>{{range .Populations}}<th>{{.}}</th>{{end}}</tr></thead>
<tbody>
{{range .Counts}}<tr data-customer="{{.CustomerID}}"><td>{{.CustomerID}}</td><td>{{.Name}}</td><td>{{.Run}}</td>{{range .Counts}}<td class="n">{{.}}</td>{{end}}</tr>
{{end}}<tr id="totals"><th colspan="3">total</th>{{range .Totals}}<td class="n">{{.}}</td>{{end}}</tr>
</tbody>
</table>
{{if .M.LeftOut}}<p class="note">Left out: {{range .M.LeftOut}}{{.Population}} ({{.Reason}}). {{end}}</p>{{end}}
</section>

<section id="gaps">
<h2>Gaps</h2>
{{if .M.Gaps}}<ul>{{range .M.Gaps}}<li>customer {{.CustomerID}}: {{.Reason}}</li>{{end}}</ul>
{{else}}<p>Every customer had a complete sync at or before the as-of time, within {{.M.Scope.MaxAge}}.</p>{{end}}
</section>

<section id="privileged">
<h2>Privileged grants</h2>
{{template "list" .Privileged}}
</section>

<section id="exceptions">
<h2>Exceptions</h2>
{{template "list" .Exceptions}}
</section>

<section id="diff">
<h2>Changes since the previous review</h2>
{{if .HasDiff}}<p>Observed after {{.M.Since}} up to {{.M.AsOf}}: <span id="diff-total">{{.Diff.Total}}</span> changes.</p>
{{if .DiffCounts}}<table id="diff-counts"><thead><tr><th>kind</th><th>change</th><th>count</th></tr></thead><tbody>
{{range .DiffCounts}}<tr><td>{{.Kind}}</td><td>{{.Change}}</td><td class="n">{{.N}}</td></tr>
{{end}}</tbody></table>{{end}}
{{template "list" .Diff}}
{{else}}<p>Not included: give <code>--since</code> (the previous review's time) to add it.</p>{{end}}
</section>

<section id="checks">
<h2>Completeness checks</h2>
<table>
<thead><tr><th>check</th><th>result</th><th>what it compares</th><th>detail</th></tr></thead>
<tbody>
{{range .M.Checks}}<tr data-check="{{.Name}}"><td>{{.Name}}</td><td class="{{.Result}}">{{.Result}}</td><td>{{.Description}}</td><td>{{.Detail}}</td></tr>
{{end}}</tbody>
</table>
</section>

<section id="notes">
<h2>Notes</h2>
<ul>{{range .M.Notes}}<li>{{.}}</li>{{end}}</ul>
</section>
</body>
</html>
{{define "list"}}{{if .Available}}<p><span class="total">{{.Total}}</span> rows{{if gt .Total (len .Rows)}}, the first {{len .Rows}} shown; all are in {{.File}}{{end}}.</p>
{{if .Rows}}<table><thead><tr>{{range .Columns}}<th>{{.}}</th>{{end}}</tr></thead><tbody>
{{range .Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</tbody></table>{{end}}{{else}}<p class="note">Not available: {{.Missing}}.</p>{{end}}{{end}}
`))
