package evidence

import (
	"archive/zip"
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// sheet is one population of the workbook.
type sheet struct {
	name, title string
	columns     []string
	rows        [][]any
}

// The workbook is written with the standard library: an Office Open XML
// spreadsheet is a zip of a few XML parts, and the pack needs only text,
// numbers, booleans, one bold style, column widths, a frozen header row
// and a filter. (A spreadsheet library here cost every syncer process
// ~8 ms of start-up, a fifth of `syncer version`, and 2.2 MB of binary;
// the tests read the workbook back with one.)

// The namespaces and content types of the parts.
const (
	nsMain          = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
	nsRel           = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
	nsPackageRel    = "http://schemas.openxmlformats.org/package/2006/relationships"
	ctWorkbook      = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
	ctWorksheet     = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
	ctStyles        = "application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"
	xmlHeader       = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>` + "\n"
	styleBold       = 1 // cellXfs index of the bold style (styles.xml)
	aboutSheetName  = "about"
	populationWidth = 18 // column width of the population sheets
)

// maxSheetRows is the most rows a sheet holds (a variable for the tests).
var maxSheetRows = 1 << 20

// worksheet is one sheet as written: its layout, and its rows, converted
// one at a time as they are written (xlsxValue).
type worksheet struct {
	name   string
	widths []float64 // per column, from A
	// header, when not nil, is row 1: bold and frozen, and the filter
	// covers it and the rows.
	header  []string
	rows    [][]any
	boldA1  bool // the about sheet's title
	changed *int // counts the cells xlsxValue changed
}

// writeWorkbook writes the workbook: an "about" sheet (what the pack is,
// as of when), then one sheet per population with a frozen, bold header
// row and a filter on every column. Text cells hold the CSV's text
// (formula-safe, see Safe), numbers are numbers, times ISO 8601 UTC text;
// a text a workbook cannot hold is changed visibly (see xlsxText) and the
// cells so changed are counted in *changed, for the manifest (the about
// sheet's are not: no CSV holds them). The bytes depend only on the data
// (the zip entries carry no time).
func writeWorkbook(w io.Writer, m *Manifest, sheets []sheet, changed *int) error {
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
	var aboutChanged int
	ws := []worksheet{{name: aboutSheetName, widths: []float64{16, 100}, rows: info, boldA1: true, changed: &aboutChanged}}
	for _, s := range sheets {
		if len(s.rows)+1 > maxSheetRows {
			return fmt.Errorf("sheet %s: %d rows, more than a workbook sheet holds (%d with its header); the CSV file holds them", s.name, len(s.rows), maxSheetRows)
		}
		widths := make([]float64, max(len(s.columns), 1))
		for i := range widths {
			widths[i] = populationWidth
		}
		header := s.columns
		if header == nil {
			header = []string{} // a sheet without columns still has its (empty) header row
		}
		ws = append(ws, worksheet{name: s.name, widths: widths, header: header, rows: s.rows, changed: changed})
	}

	z := zip.NewWriter(w)
	part := func(name string, write func(*bufio.Writer)) error {
		f, err := z.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate})
		if err != nil {
			return err
		}
		b := bufio.NewWriter(f)
		b.WriteString(xmlHeader)
		write(b)
		return b.Flush()
	}
	if err := part("[Content_Types].xml", func(b *bufio.Writer) {
		b.WriteString(`<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">`)
		b.WriteString(`<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>`)
		b.WriteString(`<Default Extension="xml" ContentType="application/xml"/>`)
		fmt.Fprintf(b, `<Override PartName="/xl/workbook.xml" ContentType="%s"/>`, ctWorkbook)
		for i := range ws {
			fmt.Fprintf(b, `<Override PartName="/xl/worksheets/sheet%d.xml" ContentType="%s"/>`, i+1, ctWorksheet)
		}
		fmt.Fprintf(b, `<Override PartName="/xl/styles.xml" ContentType="%s"/>`, ctStyles)
		b.WriteString(`</Types>`)
	}); err != nil {
		return err
	}
	if err := part("_rels/.rels", func(b *bufio.Writer) {
		fmt.Fprintf(b, `<Relationships xmlns="%s"><Relationship Id="rId1" Type="%s/officeDocument" Target="xl/workbook.xml"/></Relationships>`,
			nsPackageRel, nsRel)
	}); err != nil {
		return err
	}
	if err := part("xl/workbook.xml", func(b *bufio.Writer) {
		fmt.Fprintf(b, `<workbook xmlns="%s" xmlns:r="%s"><bookViews><workbookView activeTab="0"/></bookViews><sheets>`, nsMain, nsRel)
		for i, s := range ws {
			fmt.Fprintf(b, `<sheet name="%s" sheetId="%d" r:id="rId%d"/>`, xmlText(s.name), i+1, i+1)
		}
		b.WriteString(`</sheets>`)
		// A filter is the sheet's autoFilter and this hidden name, which
		// spreadsheet programs expect beside it.
		var names strings.Builder
		for i, s := range ws {
			if s.header != nil {
				fmt.Fprintf(&names, `<definedName name="_xlnm._FilterDatabase" localSheetId="%d" hidden="1">%s!%s</definedName>`,
					i, xmlText(quoteSheet(s.name)), s.filterRef(true))
			}
		}
		if names.Len() > 0 {
			b.WriteString(`<definedNames>` + names.String() + `</definedNames>`)
		}
		b.WriteString(`</workbook>`)
	}); err != nil {
		return err
	}
	if err := part("xl/_rels/workbook.xml.rels", func(b *bufio.Writer) {
		fmt.Fprintf(b, `<Relationships xmlns="%s">`, nsPackageRel)
		for i := range ws {
			fmt.Fprintf(b, `<Relationship Id="rId%d" Type="%s/worksheet" Target="worksheets/sheet%d.xml"/>`, i+1, nsRel, i+1)
		}
		fmt.Fprintf(b, `<Relationship Id="rId%d" Type="%s/styles" Target="styles.xml"/></Relationships>`, len(ws)+1, nsRel)
	}); err != nil {
		return err
	}
	if err := part("xl/styles.xml", func(b *bufio.Writer) {
		fmt.Fprintf(b, `<styleSheet xmlns="%s">`, nsMain)
		b.WriteString(`<fonts count="2"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font>` +
			`<font><b/><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>`)
		b.WriteString(`<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>`)
		b.WriteString(`<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>`)
		b.WriteString(`<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>`)
		b.WriteString(`<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>` +
			`<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/></cellXfs>`)
		b.WriteString(`<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>`)
	}); err != nil {
		return err
	}
	for i, s := range ws {
		if err := part(fmt.Sprintf("xl/worksheets/sheet%d.xml", i+1), func(b *bufio.Writer) { s.write(b, i == 0) }); err != nil {
			return err
		}
	}
	return z.Close()
}

// filterRef is the range the header's filter covers: the header row and
// every row under it, over every column; with absolute, as "$A$1:$D$4"
// (its defined name's formula), else as "A1:D4".
func (s *worksheet) filterRef(absolute bool) string {
	col, row := colName(len(s.widths)), strconv.Itoa(len(s.rows)+1)
	if absolute {
		return "$A$1:$" + col + "$" + row
	}
	return "A1:" + col + row
}

// write writes the sheet's XML (elements in the order the schema requires:
// sheetViews, sheetFormatPr, cols, sheetData, autoFilter).
func (s *worksheet) write(b *bufio.Writer, selected bool) {
	fmt.Fprintf(b, `<worksheet xmlns="%s" xmlns:r="%s"><sheetViews><sheetView workbookViewId="0"`, nsMain, nsRel)
	if selected {
		b.WriteString(` tabSelected="1"`)
	}
	if s.header != nil {
		b.WriteString(`><pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>` +
			`<selection pane="bottomLeft" activeCell="A2" sqref="A2"/></sheetView></sheetViews>`)
	} else {
		b.WriteString(`/></sheetViews>`)
	}
	b.WriteString(`<sheetFormatPr defaultRowHeight="15"/><cols>`)
	for i, wd := range s.widths {
		fmt.Fprintf(b, `<col min="%d" max="%d" width="%s" customWidth="1"/>`, i+1, i+1, strconv.FormatFloat(wd, 'f', -1, 64))
	}
	b.WriteString(`</cols><sheetData>`)
	row := 1
	if s.header != nil {
		b.WriteString(`<row r="1">`)
		for j, c := range s.header {
			writeCell(b, cellName(j+1, 1), styleBold, c)
		}
		b.WriteString(`</row>`)
		row++
	}
	for i, r := range s.rows {
		fmt.Fprintf(b, `<row r="%d">`, row)
		for j, v := range r {
			style := 0
			if i == 0 && j == 0 && s.boldA1 {
				style = styleBold
			}
			writeCell(b, cellName(j+1, row), style, xlsxValue(v, s.changed))
		}
		b.WriteString(`</row>`)
		row++
	}
	b.WriteString(`</sheetData>`)
	if s.header != nil {
		fmt.Fprintf(b, `<autoFilter ref="%s"/>`, s.filterRef(false))
	}
	b.WriteString(`</worksheet>`)
}

// writeCell writes one cell: a number, a boolean, or inline text (nil:
// no cell).
func writeCell(b *bufio.Writer, ref string, style int, v any) {
	var typ, val string
	switch x := v.(type) {
	case nil:
		return
	case bool:
		typ, val = "b", "0"
		if x {
			val = "1"
		}
	case int64:
		val = strconv.FormatInt(x, 10)
	case int32:
		val = strconv.FormatInt(int64(x), 10)
	case int16:
		val = strconv.FormatInt(int64(x), 10)
	case int:
		val = strconv.Itoa(x)
	case float64:
		val = strconv.FormatFloat(x, 'g', -1, 64)
		if math.IsNaN(x) || math.IsInf(x, 0) {
			typ = "inlineStr" // no number can say it
		}
	case string:
		typ, val = "inlineStr", x
	default:
		typ, val = "inlineStr", fmt.Sprint(x)
	}
	b.WriteString(`<c r="` + ref + `"`)
	if style != 0 {
		b.WriteString(` s="` + strconv.Itoa(style) + `"`)
	}
	if typ != "" {
		b.WriteString(` t="` + typ + `"`)
	}
	if typ == "inlineStr" {
		b.WriteString(`><is><t xml:space="preserve">` + xmlText(val) + `</t></is></c>`)
		return
	}
	b.WriteString(`><v>` + val + `</v></c>`)
}

// colName is the letters of column col (from 1): A–Z, then AA–ZZ, AAA…
func colName(col int) string {
	var letters []byte
	for ; col > 0; col = (col - 1) / 26 {
		letters = append(letters, byte('A'+(col-1)%26))
	}
	slices.Reverse(letters)
	return string(letters)
}

// cellName is the A1 name of the cell in column col and row row (from 1).
func cellName(col, row int) string { return colName(col) + strconv.Itoa(row) }

// quoteSheet quotes a sheet name for a formula: 'name', a ' doubled.
func quoteSheet(name string) string { return "'" + strings.ReplaceAll(name, "'", "''") + "'" }

// xmlText escapes s for XML character data or an attribute value (quotes
// included); s holds only characters XML can (see xlsxText).
func xmlText(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
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
