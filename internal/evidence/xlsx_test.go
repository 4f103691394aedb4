package evidence

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"
)

// The workbook's parts are well-formed XML, each listed in the content
// types with its relationships in place; a spreadsheet library reads back
// every cell as written (text that XML must escape, numbers, booleans,
// empty cells, columns past Z); and the same data makes the same bytes.
func TestWorkbookParts(t *testing.T) {
	t.Parallel()
	m := &Manifest{AsOf: "2026-12-01T00:00:00Z", GeneratedAt: "2026-12-02T10:00:00Z", Tool: Tool{Name: "syncer", Version: "v1", Commit: "abc"},
		Database: Database{Name: "warehouse", ServerVersion: "15.18", Schema: "msads"}}
	wide := make([]string, 30) // columns A–AD
	row := make([]any, 30)
	for i := range wide {
		wide[i] = "c" + cellName(i+1, 1)
		row[i] = int64(i)
	}
	sheets := []sheet{
		{name: "users", columns: []string{"text", "number", "bool", "empty", "float"}, rows: [][]any{
			{`a <b> & "c" 'd'` + "\nline two\ttab", int64(-42), true, nil, 1.5},
			{"", int32(7), false, nil, math.Inf(1)},
			{"x", int16(1), nil, nil, math.NaN()},
		}},
		{name: "wide", columns: wide, rows: [][]any{row}},
	}
	var first, second bytes.Buffer
	changed := 0
	if err := writeWorkbook(&first, m, sheets, &changed); err != nil {
		t.Fatal(err)
	}
	if err := writeWorkbook(&second, m, sheets, &changed); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Error("two writes of the same data differ")
	}
	if changed != 0 {
		t.Errorf("%d cells changed, want none", changed)
	}

	z, err := zip.NewReader(bytes.NewReader(first.Bytes()), int64(first.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	overrides := map[string]bool{}
	for _, f := range z.File {
		names = append(names, f.Name)
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(r)
		for {
			tok, err := d.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f.Name, err)
			}
			if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "Override" {
				for _, a := range se.Attr {
					if a.Name.Local == "PartName" {
						overrides[a.Value] = true
					}
				}
			}
		}
		r.Close()
	}
	want := []string{"[Content_Types].xml", "_rels/.rels", "xl/workbook.xml", "xl/_rels/workbook.xml.rels", "xl/styles.xml",
		"xl/worksheets/sheet1.xml", "xl/worksheets/sheet2.xml", "xl/worksheets/sheet3.xml"}
	if !slices.Equal(names, want) {
		t.Errorf("parts %q, want %q", names, want)
	}
	for _, n := range names {
		if !strings.HasSuffix(n, ".rels") && n != "[Content_Types].xml" && !overrides["/"+n] {
			t.Errorf("part %s has no content type", n)
		}
	}

	// NaN and ±Inf are no numbers a workbook holds: text cells.
	if raw := partBytes(t, first.Bytes(), "xl/worksheets/sheet2.xml"); !bytes.Contains(raw, []byte(`<c r="E4" t="inlineStr"><is><t xml:space="preserve">NaN</t></is></c>`)) {
		t.Errorf("the NaN cell is not text: %s", raw)
	}

	f, err := excelize.OpenReader(bytes.NewReader(first.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.GetSheetList(); !slices.Equal(got, []string{"about", "users", "wide"}) {
		t.Errorf("sheets %q", got)
	}
	rows, err := f.GetRows("users")
	if err != nil {
		t.Fatal(err)
	}
	wantRows := [][]string{{"text", "number", "bool", "empty", "float"},
		{`a <b> & "c" 'd'` + "\nline two\ttab", "-42", "TRUE", "", "1.5"}, {"", "7", "FALSE", "", "+Inf"}, {"x", "1", "", "", "NaN"}}
	if !slices.EqualFunc(rows, wantRows, slices.Equal) {
		t.Errorf("users rows %q, want %q", rows, wantRows)
	}
	if typ, err := f.GetCellType("users", "B2"); err != nil || typ != excelize.CellTypeUnset && typ != excelize.CellTypeNumber {
		t.Errorf("B2 type %v %v, want a number", typ, err)
	}
	if v, err := f.GetCellValue("wide", "AD2"); err != nil || v != "29" {
		t.Errorf("wide AD2 = %q %v, want 29", v, err)
	}
	if v, err := f.GetCellValue("wide", "AD1"); err != nil || v != "cAD1" {
		t.Errorf("wide AD1 = %q %v", v, err)
	}
	style, err := f.GetCellStyle("users", "C1")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := f.GetStyle(style); err != nil || st.Font == nil || !st.Font.Bold {
		t.Errorf("header style %+v %v, want bold", st, err)
	}
	if style, _ := f.GetCellStyle("users", "C2"); style != 0 {
		t.Errorf("C2 style %d, want the default", style)
	}
	if w, err := f.GetColWidth("about", "B"); err != nil || w != 100 {
		t.Errorf("about column B width %v %v", w, err)
	}
	if v, _ := f.GetCellValue("about", "B3"); v != m.GeneratedAt {
		t.Errorf("about B3 %q, want the generation time", v)
	}
	panes, err := f.GetPanes("wide")
	if err != nil || !panes.Freeze || panes.YSplit != 1 {
		t.Errorf("wide panes %+v %v", panes, err)
	}
	if !slices.ContainsFunc(f.GetDefinedName(), func(d excelize.DefinedName) bool {
		return d.Name == "_xlnm._FilterDatabase" && d.Scope == "wide" && strings.HasSuffix(d.RefersTo, "!$A$1:$AD$2")
	}) {
		t.Errorf("wide filter: %+v", f.GetDefinedName())
	}
}

func TestCellName(t *testing.T) {
	t.Parallel()
	for col, want := range map[int]string{1: "A1", 26: "Z1", 27: "AA1", 52: "AZ1", 53: "BA1", 702: "ZZ1", 703: "AAA1", 16384: "XFD1"} {
		if got := cellName(col, 1); got != want {
			t.Errorf("cellName(%d, 1) = %s, want %s", col, got, want)
		}
		if name, err := excelize.CoordinatesToCellName(col, 1); err != nil || name != want {
			t.Errorf("the library names column %d %s", col, name)
		}
	}
	s := worksheet{widths: make([]float64, 30), rows: make([][]any, 19)}
	if a, r := s.filterRef(true), s.filterRef(false); a != "$A$1:$AD$20" || r != "A1:AD20" {
		t.Errorf("filterRef = %s, %s", a, r)
	}
}

// The parts' elements come in the order the schema requires (spreadsheet
// programs that validate it refuse the file otherwise, where a lenient
// reader such as the tests' does not notice): the worksheet's and the
// workbook's top-level elements, in full.
func TestWorkbookElementOrder(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	n := 0
	if err := writeWorkbook(&buf, &Manifest{}, []sheet{{name: "users", columns: []string{"a", "b"}, rows: [][]any{{"x", int64(1)}}},
		{name: "roles", columns: []string{"c"}}}, &n); err != nil {
		t.Fatal(err)
	}
	for part, want := range map[string][]string{
		"xl/worksheets/sheet1.xml": {"sheetViews", "sheetFormatPr", "cols", "sheetData"},
		"xl/worksheets/sheet2.xml": {"sheetViews", "sheetFormatPr", "cols", "sheetData", "autoFilter"},
		"xl/worksheets/sheet3.xml": {"sheetViews", "sheetFormatPr", "cols", "sheetData", "autoFilter"},
		"xl/workbook.xml":          {"bookViews", "sheets", "definedNames"},
		"xl/styles.xml":            {"fonts", "fills", "borders", "cellStyleXfs", "cellXfs", "cellStyles"},
	} {
		if got := children(t, buf.Bytes(), part); !slices.Equal(got, want) {
			t.Errorf("%s: top-level elements %q, want %q", part, got, want)
		}
	}
	// Only the first sheet is the selected tab.
	for i, want := range []bool{true, false, false} {
		raw := partBytes(t, buf.Bytes(), fmt.Sprintf("xl/worksheets/sheet%d.xml", i+1))
		if got := bytes.Contains(raw, []byte(`tabSelected="1"`)); got != want {
			t.Errorf("sheet %d selected %v, want %v", i+1, got, want)
		}
	}
}

// A sheet name with a quote is quoted (the quote doubled) in its filter's
// formula, and escaped in the XML.
func TestWorkbookSheetNameQuoted(t *testing.T) {
	t.Parallel()
	if got := quoteSheet("o'neil & co"); got != "'o''neil & co'" {
		t.Errorf("quoteSheet = %s", got)
	}
	var buf bytes.Buffer
	n := 0
	if err := writeWorkbook(&buf, &Manifest{}, []sheet{{name: "o'neil & co", columns: []string{"a"}}}, &n); err != nil {
		t.Fatal(err)
	}
	f, err := excelize.OpenReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !slices.ContainsFunc(f.GetDefinedName(), func(d excelize.DefinedName) bool {
		return d.Scope == "o'neil & co" && d.RefersTo == "'o''neil & co'!$A$1:$A$1"
	}) {
		t.Errorf("filter names %+v", f.GetDefinedName())
	}
}

// A sheet with more rows than a sheet holds fails the workbook, naming it;
// one that fits (with its header) does not. Cells the about sheet changes
// are not counted (no CSV holds them); a population's are.
func TestWorkbookLimits(t *testing.T) {
	old := maxSheetRows
	maxSheetRows = 3
	defer func() { maxSheetRows = old }()
	n := 0
	fits := []sheet{{name: "users", columns: []string{"a"}, rows: [][]any{{"x\x01"}, {"y"}}}}
	if err := writeWorkbook(io.Discard, &Manifest{Database: Database{Name: "db\x02"}}, fits, &n); err != nil || n != 1 {
		t.Errorf("2 rows and a header in 3: %v, %d cells changed, want nil, 1", err, n)
	}
	over := []sheet{{name: "users", columns: []string{"a"}, rows: [][]any{{"x"}, {"y"}, {"z"}}}}
	if err := writeWorkbook(io.Discard, &Manifest{}, over, &n); err == nil || !strings.Contains(err.Error(), "sheet users: 3 rows") {
		t.Errorf("3 rows and a header in 3: %v", err)
	}
}

// An error of the writer the workbook goes to is returned.
func TestWorkbookWriteError(t *testing.T) {
	t.Parallel()
	n := 0
	err := writeWorkbook(failingWriter{}, &Manifest{}, []sheet{{name: "users", columns: []string{"a"}, rows: [][]any{{"x"}}}}, &n)
	if !errors.Is(err, errDiskFull) {
		t.Errorf("error %v, want the writer's", err)
	}
}

var errDiskFull = errors.New("disk full")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errDiskFull }

// children returns the local names of the root element's children in part.
func children(t *testing.T, zipped []byte, part string) []string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(partBytes(t, zipped, part)))
	var names []string
	depth := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatalf("%s: %v", part, err)
		}
		switch x := tok.(type) {
		case xml.StartElement:
			if depth == 1 {
				names = append(names, x.Name.Local)
			}
			depth++
		case xml.EndElement:
			depth--
		}
	}
}

func partBytes(t *testing.T, zipped []byte, part string) []byte {
	t.Helper()
	z, err := zip.NewReader(bytes.NewReader(zipped), int64(len(zipped)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := z.Open(part)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
