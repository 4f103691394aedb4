package load

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// The read-back: a re-run reads back, in one round trip, the stored rows
// its snapshot's keys can find (sql/stored.sql) and compares them in Go
// with the staged rows, so that only rows that may change are sent and
// only statements that may write run (a snapshot that changes nothing
// sends no row and runs no write statement).
//
// The comparison is conservative: a staged row is left out only when its
// stored row is current and holds exactly the bytes the COPY of the
// staged row would have sent for every compared column (the values the
// pgx type map encodes for the stored column's type and format), which
// is what the upsert would have found equal and not written. Any doubt
// (a value that does not encode, a users row GetUser could not read,
// whose written values depend on the stored ones) sends the row, and the
// SQL comparison decides as before. Nothing is cached between runs: the
// rows compared with are those stored when the transaction reads them
// (the customer's lock is held), whatever wrote them, so no other writer
// (SweepRoles, reconcile, manual SQL) can make the comparison stale.

// storedSQL are the read-back queries of the tables whose rows a re-run
// compares in Go, and ownedSQL the queries of the rows their removal
// decides.
var (
	storedSQL = map[*table]string{
		usersTable: render("stored.sql", map[string]any{"T": usersTable, "Where": "t.customer_id = @customer_id"}),
		rolesTable: render("stored.sql", map[string]any{"T": rolesTable, "Where": ranges("user_roles", "user_id", "@readable"), "Ordered": true}),
		invitationsTable: render("stored.sql", map[string]any{"T": invitationsTable, "Where": "true",
			"From": "unnest(@keys::bigint[]) AS k(v) CROSS JOIN " + lateral("user_invitations", "t.invitation_id = k.v")}),
		accountsTable: render("stored.sql", map[string]any{"T": accountsTable, "Where": "true",
			"From": "unnest(@keys::bigint[]) AS k(v) CROSS JOIN " + lateral("accounts", "t.account_id = k.v")}),
	}
	ownedSQL = map[*table]string{
		invitationsTable: render("owned.sql", invitationsTable),
		accountsTable:    render("owned.sql", accountsTable),
	}
)

// readBack finds the new keys (queueFresh, which sets their rows apart for
// the direct path) and the current invitations and accounts of the
// customer (sql/owned.sql) in one round trip, then compares the snapshot's
// other rows (rows) with the stored ones (sql/stored.sql) in a second, and
// leaves in rows only those to stage. On a customer's first write every key
// is new and the second round trip has nothing to read. It sets:
//
//   - current and dropped (w.args["dropped"]): the customer's current
//     users and those the snapshot does not list, when its users are not
//     new (the removal guard's figures);
//   - w.roleUsers: the listed users GetUser read whose stored roles differ
//     from the staged ones (a role missing, removed or with other values,
//     or a current role in Snapshot.RoleCustomers not staged): the roles
//     upsert writes only theirs (all their staged roles);
//   - w.args["gone_<table>"]: the invitations and accounts of the
//     customer that are current and not listed (their removal).
func (w *writer) readBack(ctx context.Context, rows map[*table][][]any) (current int, err error) {
	st := w.st
	w.roleUsers = nil
	var p pipeline
	w.queueFresh(&p, rows)
	// The current rows of the customer, whatever the lookup finds: those
	// not listed are removed (a new key cannot be among them).
	for _, t := range []*table{invitationsTable, accountsTable} {
		if t == accountsTable && !st.accountsFetched {
			continue
		}
		keys := firstKeys(rows[t])
		p.queue(ownedSQL[t], pgx.NamedArgs{"customer_id": st.customerID}, func(br pgx.BatchResults) error {
			var owned []int64
			if err := br.QueryRow().Scan(&owned); err != nil {
				return fmt.Errorf("read back current %s: %w", t.Name, err)
			}
			w.args["gone_"+t.Name] = notIn(owned, keys)
			return nil
		})
	}
	if err := p.send(ctx, w.tx); err != nil {
		return 0, err
	}
	if w.store.testSendAll {
		all := maps.Clone(rows)
		defer func() {
			maps.Copy(rows, all)
			w.roleUsers = w.staleReadable()
		}()
	}
	m := w.tx.Conn().TypeMap()
	// stored queues the read-back of t's stored rows (storedSQL) with
	// args, whose result cmp compares with rows[t].
	stored := func(t *table, args pgx.NamedArgs, cmp func(pgx.Rows) error) {
		p.queue(storedSQL[t], args, func(br pgx.BatchResults) error {
			res, err := br.Query()
			if err == nil {
				err = cmp(res)
			}
			if err != nil {
				return fmt.Errorf("read back %s: %w", t.Name, err)
			}
			return nil
		})
	}
	if len(w.fresh[usersTable]) == 0 {
		stored(usersTable, pgx.NamedArgs{"customer_id": st.customerID}, func(res pgx.Rows) error {
			var dropped []int64
			var err error
			// Only rows GetUser read write their staged values whatever
			// is stored (userValues); the others are always sent.
			rows[usersTable], err = diffRows(m, usersTable, res, rows[usersTable], func(r []any) bool { return r[usersDetailStatus] == statusOK },
				func(key [3]int64, cur, staged bool) {
					if cur {
						current++
						if !staged {
							dropped = append(dropped, key[1])
						}
					}
				})
			slices.Sort(dropped) // stored rows come in any order
			w.args["dropped"] = dropped
			return err
		})
	}
	if readable := w.staleReadable(); len(readable) > 0 {
		stored(rolesTable, pgx.NamedArgs{"readable": readable}, func(res pgx.Rows) error { return w.diffRoles(m, res, rows) })
	}
	for _, t := range []*table{invitationsTable, accountsTable} {
		if t == accountsTable && !st.accountsFetched || len(rows[t]) == 0 {
			continue
		}
		keys := firstKeys(rows[t])
		stored(t, pgx.NamedArgs{"keys": keys}, func(res pgx.Rows) error {
			var err error
			rows[t], err = diffRows(m, t, res, rows[t], nil, nil)
			return err
		})
	}
	if err := p.send(ctx, w.tx); err != nil {
		return 0, err
	}
	return current, nil
}

// diffRoles compares the stored roles res (of the listed users GetUser read
// whose roles are not new) with the staged ones and sets w.roleUsers and
// rows[rolesTable] (see readBack).
func (w *writer) diffRoles(m *pgtype.Map, res pgx.Rows, rows map[*table][][]any) error {
	st := w.st
	var work []int64
	changed, err := diffRows(m, rolesTable, res, rows[rolesTable], nil, func(key [3]int64, cur, staged bool) {
		if cur && !staged && (st.roleCustomers == nil || contains(st.roleCustomers, key[1])) {
			work = append(work, key[0])
		}
	})
	if err != nil {
		return err
	}
	for _, r := range changed {
		work = append(work, firstKey(r))
	}
	slices.Sort(work)
	work = slices.Compact(work)
	w.roleUsers = work
	var send [][]any
	for _, r := range rows[rolesTable] {
		if contains(work, firstKey(r)) {
			send = append(send, r)
		}
	}
	rows[rolesTable] = send
	return nil
}

// firstKeys returns the first key value of each row (stage puts an int64
// or a pointer to one there).
func firstKeys(rows [][]any) []int64 {
	keys := make([]int64, len(rows))
	for i, r := range rows {
		keys[i] = firstKey(r)
	}
	return keys
}

// usersDetailStatus is the index of detail_status in a staged users row.
var usersDetailStatus = slices.Index(usersTable.All(), "detail_status")

func contains(sorted []int64, v int64) bool {
	_, ok := slices.BinarySearch(sorted, v)
	return ok
}

// notIn returns the values of sorted a that sorted b does not hold.
func notIn(a, b []int64) []int64 {
	out := []int64{}
	for _, v := range a {
		if !contains(b, v) {
			out = append(out, v)
		}
	}
	return out
}

// keyInt returns the integer a staged key value holds (stage puts an
// integer or a pointer to one there).
func keyInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int64:
		return v, true
	case *int64:
		return *v, true
	case int32:
		return int64(v), true
	case *int32:
		return int64(*v), true
	case int:
		return int64(v), true
	}
	return 0, false
}

// rawInt decodes a stored key column (bigint or integer).
func rawInt(m *pgtype.Map, fd pgconn.FieldDescription, raw []byte) (int64, error) {
	if fd.Format == pgx.BinaryFormatCode {
		switch len(raw) {
		case 8:
			return int64(binary.BigEndian.Uint64(raw)), nil
		case 4:
			return int64(int32(binary.BigEndian.Uint32(raw))), nil
		}
	}
	var v int64
	err := m.Scan(fd.DataTypeOID, fd.Format, raw, &v)
	return v, err
}

// diffRows compares the stored rows res (sql/stored.sql: key, current,
// Cols; in any order) with staged (sorted by key, each key once) and returns
// the staged rows to send, in key order: those with no stored row, a
// removed one, one whose compared columns hold other bytes than the staged
// values encode to, or for which comparable (nil: all) says no. each (when
// not nil) is called for every stored row, in the order they come: its
// key, whether it is current and whether its key is staged.
func diffRows(m *pgtype.Map, t *table, res pgx.Rows, staged [][]any, comparable func([]any) bool,
	each func(key [3]int64, current, staged bool)) ([][]any, error) {
	defer res.Close()
	nk := len(t.Key)
	fds := res.FieldDescriptions()
	if len(fds) != nk+1+len(t.Cols) {
		return nil, fmt.Errorf("%d columns read back, want %d", len(fds), nk+1+len(t.Cols))
	}
	// The staged keys, found by binary search: they must be in strictly
	// increasing order, as stage sorts them.
	keys := make([][3]int64, len(staged))
	for i, r := range staged {
		for j := range nk {
			v, ok := keyInt(r[j])
			if !ok {
				panic(fmt.Sprintf("load: %s key value of type %T", t.Name, r[j]))
			}
			keys[i][j] = v
		}
		if i > 0 && !keyLess(keys[i-1], keys[i], nk) {
			return nil, fmt.Errorf("staged %s rows out of key order at %v", t.Name, keys[i])
		}
	}
	// sameRow[i]: staged[i] is as stored (not sent).
	sameRow := make([]bool, len(staged))
	buf := make([]byte, 0, 256)
	// The encode plan of each compared column, for the Go type of the
	// last value it encoded (a column's staged values have one or two
	// types: a pointer and nil); looking a plan up costs more than
	// encoding.
	type colPlan struct {
		typ  reflect.Type
		plan pgtype.EncodePlan
	}
	plans := make([]colPlan, len(t.Cols))
	next := 0 // where the key after the last found one is: stored rows mostly come in key order
	for res.Next() {
		vals := res.RawValues()
		var key [3]int64
		for j := range nk {
			v, err := rawInt(m, fds[j], vals[j])
			if err != nil {
				return nil, err
			}
			key[j] = v
		}
		var cur bool
		if raw := vals[nk]; fds[nk].Format == pgx.BinaryFormatCode && len(raw) == 1 {
			cur = raw[0] == 1
		} else if err := m.Scan(fds[nk].DataTypeOID, fds[nk].Format, raw, &cur); err != nil {
			return nil, err
		}
		i, isStaged := findKey(keys, key, nk, next)
		next = i + 1
		if each != nil {
			each(key, cur, isStaged)
		}
		if !isStaged {
			continue
		}
		r := staged[i]
		same := cur && (comparable == nil || comparable(r))
		for j := 0; same && j < len(t.Cols); j++ {
			fd, v, raw := fds[nk+1+j], r[nk+j], vals[nk+1+j]
			if v == nil {
				same = raw == nil
				continue
			}
			// Text is sent as its bytes in either format (UTF8 client
			// encoding) and a bigint in binary as 8 bytes: compared here
			// without encoding, the most common values.
			switch x := v.(type) {
			case string:
				if fd.DataTypeOID == pgtype.TextOID {
					same = raw != nil && string(raw) == x
					continue
				}
			case *string:
				if x == nil {
					same = raw == nil
					continue
				}
				if fd.DataTypeOID == pgtype.TextOID {
					same = raw != nil && string(raw) == *x
					continue
				}
			case *time.Time:
				if x == nil {
					same = raw == nil
					continue
				}
				if fd.DataTypeOID == pgtype.TimestamptzOID && fd.Format == pgx.BinaryFormatCode {
					same = len(raw) == 8 && int64(binary.BigEndian.Uint64(raw)) == microsSinceY2K(*x)
					continue
				}
			case *int64:
				if x == nil {
					same = raw == nil
					continue
				}
				if fd.DataTypeOID == pgtype.Int8OID && fd.Format == pgx.BinaryFormatCode {
					same = len(raw) == 8 && int64(binary.BigEndian.Uint64(raw)) == *x
					continue
				}
			case []int64:
				if x == nil { // NULL (sortedIDs keeps nil nil)
					same = raw == nil
					continue
				}
				// pgx sends an empty array as one dimension of length 0,
				// which PostgreSQL stores, and sends back, as the empty
				// array (no dimension): the same value.
				if len(x) == 0 && fd.Format == pgx.BinaryFormatCode {
					same = len(raw) >= 4 && binary.BigEndian.Uint32(raw) == 0
					continue
				}
				if fd.DataTypeOID == pgtype.Int8ArrayOID && fd.Format == pgx.BinaryFormatCode {
					same = sameInt8Array(raw, x)
					continue
				}
			}
			p := &plans[j]
			if typ := reflect.TypeOf(v); p.plan == nil || p.typ != typ {
				p.typ, p.plan = typ, m.PlanEncode(fd.DataTypeOID, fd.Format, v)
			}
			if p.plan == nil {
				same = false // cannot encode: let the COPY say why
				break
			}
			enc, err := p.plan.Encode(v, buf[:0])
			if err != nil {
				same = false
				break
			}
			same = (enc == nil) == (raw == nil) && bytes.Equal(enc, raw)
			if enc != nil {
				buf = enc[:0]
			}
		}
		sameRow[i] = same
	}
	if err := res.Err(); err != nil {
		return nil, err
	}
	var send [][]any
	for i, r := range staged {
		if !sameRow[i] {
			send = append(send, r)
		}
	}
	return send, nil
}

// findKey finds key in keys (sorted, the first n values of each compared)
// as slices.BinarySearch does: its index, or where it would be, and whether
// it is there. It looks at hint first: the index after the key found last,
// which is where the next key is when stored rows come in key order (the
// users of a customer written by COPY in that order, the roles read in it).
func findKey(keys [][3]int64, key [3]int64, n, hint int) (int, bool) {
	if hint < len(keys) && keyCmp(keys[hint], key, n) == 0 {
		return hint, true
	}
	lo, hi := 0, len(keys)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if keyCmp(keys[h], key, n) < 0 {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo, lo < len(keys) && keyCmp(keys[lo], key, n) == 0
}

// microsSinceY2K is a time as PostgreSQL's binary timestamptz holds it
// (microseconds since 2000-01-01 UTC), computed as pgx encodes it.
func microsSinceY2K(t time.Time) int64 {
	const unixToY2K = 946_684_800 * 1_000_000
	return t.Unix()*1_000_000 + int64(t.Nanosecond())/1000 - unixToY2K
}

// sameInt8Array reports whether raw, a bigint[] in PostgreSQL's binary
// array format, is the one-dimensional array of ids (not empty) with no
// NULL element and lower bound 1: the array pgx sends for ids.
func sameInt8Array(raw []byte, ids []int64) bool {
	const header = 20 // ndim, has-null flag, element type, length, lower bound
	if len(raw) != header+12*len(ids) {
		return false
	}
	be := binary.BigEndian
	if be.Uint32(raw) != 1 || be.Uint32(raw[4:]) != 0 || be.Uint32(raw[8:]) != pgtype.Int8OID ||
		be.Uint32(raw[12:]) != uint32(len(ids)) || be.Uint32(raw[16:]) != 1 {
		return false
	}
	for i, id := range ids {
		e := raw[header+12*i:]
		if be.Uint32(e) != 8 || int64(be.Uint64(e[4:])) != id {
			return false
		}
	}
	return true
}

// keyCmp compares the first n values of two keys.
func keyCmp(a, b [3]int64, n int) int {
	for i := range n {
		if c := cmp.Compare(a[i], b[i]); c != 0 {
			return c
		}
	}
	return 0
}

func keyLess(a, b [3]int64, n int) bool { return keyCmp(a, b, n) < 0 }
