package load

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// rowsJSON encodes staged rows of t (the values of t.All(), in that order)
// as the JSON array of objects that t.Staged() reads back with
// json_populate_recordset: the statements that write t take the rows as one
// parameter (@rows_<table>), so a write stages nothing in a table. Every
// value keeps what a COPY of it would store: NULL for nil (a nil slice too;
// an empty one is []), and a time at microseconds, truncated as pgx's
// binary encoding truncates it (PostgreSQL would round the digits beyond).
func rowsJSON(t *table, rows [][]any) (string, error) {
	cols := t.All()
	keys := make([][]byte, len(cols))
	for i, c := range cols {
		keys[i] = append(strconv.AppendQuote(nil, c), ':')
	}
	b := make([]byte, 0, 64+len(rows)*len(cols)*24)
	b = append(b, '[')
	for i, r := range rows {
		if len(r) != len(cols) {
			return "", fmt.Errorf("stage %s: a row of %d values for %d columns", t.Name, len(r), len(cols))
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		for j, v := range r {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, keys[j]...)
			var err error
			if b, err = appendJSONValue(b, v); err != nil {
				return "", fmt.Errorf("stage %s.%s: %w", t.Name, cols[j], err)
			}
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	return string(b), nil
}

// appendJSONValue appends v, one of the types stage puts in a row, as JSON.
func appendJSONValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case *int64:
		if v == nil {
			return append(b, "null"...), nil
		}
		return strconv.AppendInt(b, *v, 10), nil
	case int32:
		return strconv.AppendInt(b, int64(v), 10), nil
	case *int32:
		if v == nil {
			return append(b, "null"...), nil
		}
		return strconv.AppendInt(b, int64(*v), 10), nil
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case *bool:
		if v == nil {
			return append(b, "null"...), nil
		}
		return strconv.AppendBool(b, *v), nil
	case string:
		return appendJSONString(b, v)
	case *string:
		if v == nil {
			return append(b, "null"...), nil
		}
		return appendJSONString(b, *v)
	case time.Time:
		return appendJSONTime(b, v), nil
	case *time.Time:
		if v == nil {
			return append(b, "null"...), nil
		}
		return appendJSONTime(b, *v), nil
	case []int64:
		if v == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, n := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, n, 10)
		}
		return append(b, ']'), nil
	}
	return b, fmt.Errorf("a value of type %T has no JSON encoding here", v)
}

// appendJSONString appends s as a JSON string (stage has made it valid
// UTF-8 without NUL, which PostgreSQL's json→text conversion refuses).
func appendJSONString(b []byte, s string) ([]byte, error) {
	q, err := json.Marshal(s)
	if err != nil {
		return b, err
	}
	return append(b, q...), nil
}

// appendJSONTime appends t as an RFC 3339 string in UTC, truncated to the
// microsecond (timestamptz's precision, as pgx's binary encoding does).
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().Truncate(time.Microsecond).AppendFormat(b, "2006-01-02T15:04:05.999999Z07:00")
	return append(b, '"')
}
