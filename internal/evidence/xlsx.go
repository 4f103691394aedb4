package evidence

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

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
// (formula-safe, see Safe), numbers are numbers, times ISO 8601 UTC text;
// a text a workbook cannot hold is changed visibly (see xlsxText) and the
// cells so changed are counted in *changed, for the manifest.
func writeWorkbook(w io.Writer, m *Manifest, sheets []sheet, changed *int) error {
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
				vals[j] = xlsxValue(v, changed)
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

// xlsxValue keeps numbers numeric; everything else is the CSV's text, as
// far as a workbook can hold it (xlsxText).
func xlsxValue(v any, changed *int) any {
	switch x := v.(type) {
	case int64, int32, int16, int, float64, bool:
		return x
	case nil:
		return nil
	case time.Time:
		return Cell(x)
	}
	s, ok := xlsxText(Cell(v))
	if !ok {
		*changed++
	}
	return s
}

// maxCellUnits is the most UTF-16 code units a workbook cell holds.
const maxCellUnits = 32767

// xlsxText returns s as a workbook cell can hold it, and whether that is
// s unchanged. XML 1.0 forbids most control characters: each becomes
// U+FFFD. A text longer than a cell holds is cut, ending in a marker that
// says so and how long it is (the CSV holds it whole), rather than cut
// silently by the library.
func xlsxText(s string) (string, bool) {
	ok := true
	if strings.ContainsFunc(s, notXMLChar) {
		ok = false
		s = strings.Map(func(r rune) rune {
			if notXMLChar(r) {
				return utf8.RuneError
			}
			return r
		}, s)
	}
	units := len(utf16.Encode([]rune(s)))
	if units <= maxCellUnits {
		return s, ok
	}
	marker := fmt.Sprintf(" … [cut: %d characters; the CSV holds the whole text]", utf8.RuneCountInString(s))
	budget := maxCellUnits - len(utf16.Encode([]rune(marker)))
	var b strings.Builder
	for _, r := range s {
		n := utf16.RuneLen(r)
		if budget-n < 0 {
			break
		}
		budget -= n
		b.WriteRune(r)
	}
	return b.String() + marker, false
}

// notXMLChar reports a character XML 1.0 cannot hold.
func notXMLChar(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
		return false
	case r < 0x20, r == 0xFFFE, r == 0xFFFF, r >= 0xD800 && r <= 0xDFFF:
		return true
	}
	return false
}
