package evidence

import (
	"fmt"
	"io"
	"time"

	"github.com/xuri/excelize/v2"
)

// sheet is one population of the workbook.
type sheet struct {
	name, title string
	columns     []string
	rows        [][]any
}

// writeWorkbook writes the workbook: an "about" sheet (what the pack is,
// as of when), then one sheet per population with a frozen, bold header
// row and a filter on every column. Text cells hold the CSV's text
// (formula-safe, see Safe), numbers are numbers, times ISO 8601 UTC text.
func writeWorkbook(w io.Writer, m *Manifest, sheets []sheet) error {
	f := excelize.NewFile()
	defer func() { _ = f.Close() }()
	bold, err := f.NewStyle(&excelize.Style{Font: &excelize.Font{Bold: true}})
	if err != nil {
		return err
	}
	const about = "about"
	if err := f.SetSheetName("Sheet1", about); err != nil {
		return err
	}
	info := [][]any{
		{"Access review evidence", ""},
		{"as_of", m.AsOf},
		{"generated_at", m.GeneratedAt},
		{"database", m.Database.Name + " (PostgreSQL " + m.Database.ServerVersion + "), schema " + m.Database.Schema},
		{"tool", m.Tool.Name + " " + m.Tool.Version + " " + m.Tool.Commit},
		{"manifest", "manifest.json holds each sheet's SQL, row count and the checks; the CSV files hold the same cells"},
	}
	if m.Since != "" {
		info = append(info, []any{"since", m.Since})
	}
	for i, r := range info {
		if err := f.SetSheetRow(about, fmt.Sprintf("A%d", i+1), &r); err != nil {
			return err
		}
	}
	if err := f.SetCellStyle(about, "A1", "A1", bold); err != nil {
		return err
	}
	if err := f.SetColWidth(about, "A", "A", 16); err != nil {
		return err
	}
	if err := f.SetColWidth(about, "B", "B", 100); err != nil {
		return err
	}
	for _, s := range sheets {
		if _, err := f.NewSheet(s.name); err != nil {
			return err
		}
		sw, err := f.NewStreamWriter(s.name)
		if err != nil {
			return err
		}
		if err := sw.SetPanes(&excelize.Panes{Freeze: true, YSplit: 1, TopLeftCell: "A2", ActivePane: "bottomLeft"}); err != nil {
			return err
		}
		if err := sw.SetColWidth(1, len(s.columns), 18); err != nil {
			return err
		}
		header := make([]any, len(s.columns))
		for i, c := range s.columns {
			header[i] = excelize.Cell{StyleID: bold, Value: c}
		}
		if err := sw.SetRow("A1", header); err != nil {
			return err
		}
		for i, r := range s.rows {
			vals := make([]any, len(r))
			for j, v := range r {
				vals[j] = xlsxValue(v)
			}
			if err := sw.SetRow(fmt.Sprintf("A%d", i+2), vals); err != nil {
				return err
			}
		}
		if err := sw.Flush(); err != nil {
			return err
		}
		last, err := excelize.CoordinatesToCellName(max(len(s.columns), 1), len(s.rows)+1)
		if err != nil {
			return err
		}
		if err := f.AutoFilter(s.name, "A1:"+last, nil); err != nil {
			return err
		}
	}
	_, err = f.WriteTo(w)
	return err
}

// xlsxValue keeps numbers numeric; everything else is the CSV's text.
func xlsxValue(v any) any {
	switch x := v.(type) {
	case int64, int32, int16, int, float64, bool:
		return x
	case nil:
		return nil
	case time.Time:
		return Cell(x)
	}
	return Cell(v)
}
