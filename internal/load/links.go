package load

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/msads"
)

// linksTable: client links (SearchClientLinks), keyed by (type, client
// entity, managing customer).
//
// Whose row is it: no one customer's. A link between two synced customers
// (agency A and client C) is found by both A's search of the links it holds
// and C's search of the links into it, and written by both snapshots,
// concurrently: the race user_roles has, answered the same way (Deferred
// history, see rolesTable).
//
// Removal only within what was fully seen, per searched customer (the
// scopeWhere, with the snapshot's searches as arguments; Owner is empty, so
// OwnedBy adds nothing): a complete search of the customer links into C
// removes the customer links to C it omits; a complete search of the
// account links into C's accounts removes the account links into those
// accounts (and, when every account was searched, those whose client
// customer is known to be C: accounts C no longer lists); a complete search
// of the links C holds as an agency removes C's links it omits. A search the
// credential was not permitted removes nothing.
//
// Values: searched_from_customer_id stays the customer that first found the
// current row (a link found by two customers is not rewritten run after run
// by whichever wrote last); client_customer_id keeps what a search knew
// when the next does not know it (the agency's side of an account link).
var linksTable = &table{Name: "client_links", History: "client_links_history",
	Key: []string{"type", "client_entity_id", "managing_customer_id"},
	Cols: []string{"client_entity_number", "client_entity_name", "client_entity_customer_number", "client_customer_id",
		"managing_customer_number", "managing_customer_name", "status", "customer_link_permission", "is_bill_to_client",
		"start_date", "inviter_email", "inviter_name", "inviter_phone", "name", "note", "last_modified_time",
		"last_modified_by_user_id", "searched_from_customer_id"},
	Deferred: true, values: linkValues, Merge: true,
	scopeWhere: "((@links_into_customer::bool AND t.type = '" + msads.LinkTypeCustomer + "' AND t.client_entity_id = @customer_id)" +
		" OR (t.type <> '" + msads.LinkTypeCustomer + "' AND (t.client_entity_id = ANY(@links_accounts::bigint[])" +
		" OR (@links_all_accounts::bool AND t.client_customer_id = @customer_id)))" +
		" OR (@links_from_customer::bool AND t.managing_customer_id = @customer_id))"}

func linkValues(cols []string, s, x string) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		switch c {
		case "searched_from_customer_id":
			out[i] = "CASE WHEN " + x + ".removed_at IS NULL AND " + x + "." + c + " IS NOT NULL THEN " + x + "." + c + " ELSE " + s + "." + c + " END"
		case "client_customer_id":
			out[i] = "coalesce(" + s + "." + c + ", " + x + "." + c + ")"
		default:
			out[i] = s + "." + c
		}
	}
	return out
}

// linksKeptSQL counts the links in the searches' scope that were current
// before this write and still are: current now, not added or reappeared by
// it (@written: the rows the upsert wrote, as it returned them).
var linksKeptSQL = "SELECT count(*) FROM client_links t WHERE t.removed_at IS NULL AND " + linksTable.scopeWhere +
	" AND NOT EXISTS (SELECT 1 FROM json_array_elements(@written::json) e WHERE e->>'change' IN ('added', 'reappeared')" +
	" AND (e->>'type', (e->>'client_entity_id')::bigint, (e->>'managing_customer_id')::bigint) = (t.type, t.client_entity_id, t.managing_customer_id))"

// linksCurrentSQL says whether any link in the searches' scope is current.
var linksCurrentSQL = "SELECT EXISTS (SELECT 1 FROM client_links t WHERE t.removed_at IS NULL AND " + linksTable.scopeWhere + ")"

// linksGuard is the removal guard of the users (checkGuard) for client
// links: the API keeps a link that ends (Inactive, LinkExpired,
// LinkDeclined…: "the most recent link for each unique combination"), so
// complete searches that omit every link current in their scope, or more
// than sync.removal_guard of them, are more likely a faulty answer than
// links that went; the customer fails (its transaction, users included, is
// rolled back) until a run with --allow-mass-removal says they did go.
// removed of kept+removed links current before the write would go.
func (s *Store) linksGuard(kept, removed int) error {
	current := kept + removed
	if kept == 0 {
		return fmt.Errorf("%w: the client link searches omit all %d links current in their scope; rerun with --allow-mass-removal if they were all removed",
			ErrRemovalGuard, current)
	}
	if frac := float64(removed) / float64(current); frac > s.opts.RemovalGuard {
		return fmt.Errorf("%w: the client link searches would remove %d of %d current links (%.0f%%, more than the %.0f%% allowed); rerun with --allow-mass-removal if this is expected",
			ErrRemovalGuard, removed, current, frac*100, s.opts.RemovalGuard*100)
	}
	return nil
}

// stagedLinks is the link part of a staged snapshot.
type stagedLinks struct {
	searched bool    // the snapshot searched links (Snapshot.LinkSearches not nil)
	rows     [][]any // linksTable.All() values
	args     pgx.NamedArgs
	status   string   // customer_syncs.links_status
	errText  string   // customer_syncs.links_error
	replaced []string // keys of links whose strings were cleaned
}

// stageLinks validates and deduplicates the snapshot's links and sets the
// removal scope from its searches.
func stageLinks(snap *msads.Snapshot, bad func(string, ...any) error) (stagedLinks, error) {
	out := stagedLinks{searched: snap.LinkSearches != nil, status: snap.LinksStatus(), errText: snap.LinksError()}
	if !out.searched {
		if len(snap.Links) > 0 {
			return out, bad("%d client links without the searches that found them", len(snap.Links))
		}
		return out, nil
	}
	into, from, all := false, false, false
	accounts := []int64{}
	for _, ls := range snap.LinkSearches {
		switch ls.Kind {
		case msads.LinkSearchIntoCustomer:
			into = ls.Complete
		case msads.LinkSearchFromCustomer:
			from = ls.Complete
		case msads.LinkSearchIntoAccounts:
			accounts = append(accounts, ls.AccountIDs...)
			all = ls.Complete && ls.AllAccounts
		default:
			return out, bad("client link search of unknown kind %q", ls.Kind)
		}
	}
	out.args = pgx.NamedArgs{"links_into_customer": into, "links_from_customer": from,
		"links_accounts": sortedIDs(accounts), "links_all_accounts": all}

	links := slices.Clone(snap.Links)
	for i := range links {
		l := &links[i]
		if l.Type == "" {
			l.Type = msads.LinkTypeAccount
		}
		if l.ClientEntityID <= 0 || l.ManagingCustomerID <= 0 {
			return out, bad("client link without client entity or managing customer (%d, %d)", l.ClientEntityID, l.ManagingCustomerID)
		}
	}
	slices.SortStableFunc(links, func(a, b msads.ClientLink) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.ClientEntityID, b.ClientEntityID), cmp.Compare(a.ManagingCustomerID, b.ManagingCustomerID))
	})
	cid := snap.CustomerID
	for i := range links {
		l := &links[i]
		if i+1 < len(links) && links[i+1].Type == l.Type && links[i+1].ClientEntityID == l.ClientEntityID &&
			links[i+1].ManagingCustomerID == l.ManagingCustomerID {
			links[i+1].ClientCustomerID = cmp.Or(links[i+1].ClientCustomerID, l.ClientCustomerID)
			continue // keep the last of duplicates
		}
		if cleanAll(&l.Type, &l.ClientEntityNumber, &l.ClientEntityName, &l.ClientEntityCustomerNumber, &l.ManagingCustomerNumber,
			&l.ManagingCustomerName, &l.Status, &l.CustomerLinkPermission, &l.InviterEmail, &l.InviterName, &l.InviterPhone,
			&l.Name, &l.Note) {
			out.replaced = append(out.replaced, fmt.Sprintf("%s %d/%d", l.Type, l.ClientEntityID, l.ManagingCustomerID))
		}
		var client, modifiedBy any
		if l.ClientCustomerID != 0 {
			client = l.ClientCustomerID
		}
		if l.LastModifiedByUserID != 0 {
			modifiedBy = l.LastModifiedByUserID
		}
		out.rows = append(out.rows, []any{l.Type, l.ClientEntityID, l.ManagingCustomerID,
			nullable(l.ClientEntityNumber), nullable(l.ClientEntityName), nullable(l.ClientEntityCustomerNumber), client,
			nullable(l.ManagingCustomerNumber), nullable(l.ManagingCustomerName), nullable(l.Status),
			nullable(l.CustomerLinkPermission), l.IsBillToClient, l.StartDate, nullable(l.InviterEmail), nullable(l.InviterName),
			nullable(l.InviterPhone), nullable(l.Name), nullable(l.Note), l.LastModifiedTime, modifiedBy, cid})
	}
	return out, nil
}

// covers reports whether any search was complete (else nothing is removed).
func (sl *stagedLinks) covers() bool {
	return sl.args["links_into_customer"] == true || sl.args["links_from_customer"] == true ||
		len(sl.args["links_accounts"].([]int64)) > 0
}

// links writes the staged links: the upsert and the removal within the
// searches' scope return what they wrote, then the history of those rows
// is written (a separate statement, see rolesTable).
func (w *writer) links(ctx context.Context, ch *Changes) error {
	sl := &w.st.links
	if !sl.searched {
		return nil
	}
	args := pgx.NamedArgs{"customer_id": w.st.customerID, "run_id": w.args["run_id"]}
	for k, v := range sl.args {
		args[k] = v
	}
	if len(sl.rows) == 0 {
		// Nothing to stage: the removal can only remove current links in
		// the searches' scope. Most customers have none, and then no
		// statement runs.
		if !sl.covers() {
			return nil
		}
		var any bool
		if err := w.tx.QueryRow(ctx, linksCurrentSQL, args).Scan(&any); err != nil {
			return fmt.Errorf("find current client_links: %w", err)
		}
		if !any {
			return nil
		}
	}
	// written: what the upsert and the removal wrote; upserted: the
	// upsert's rows alone (the removal guard counts the links it kept).
	var written changeSet
	upserted := "[]"
	if len(sl.rows) > 0 {
		for _, c := range chunks(sl.rows, w.store.maxStaged(), false) {
			cargs, err := upsertArgs(linksTable, c, args)
			if err != nil {
				return err
			}
			if _, err := written.scan(w.tx.QueryRow(ctx, linksTable.upsert, cargs)); err != nil {
				return fmt.Errorf("write client_links: %w", err)
			}
		}
		upserted = written.json()
		// The removal sets apart every staged key.
		rows, err := rowsJSON(linksTable, sl.rows)
		if err != nil {
			return err
		}
		args[linksTable.RowsArg()] = rows
	}
	if sl.covers() {
		removed, err := written.scan(w.tx.QueryRow(ctx, linksTable.remove, args))
		if err != nil {
			return fmt.Errorf("remove client_links: %w", err)
		}
		if removed > 0 && !w.store.opts.AllowMassRemoval {
			var kept int
			args["written"] = upserted
			if err := w.tx.QueryRow(ctx, linksKeptSQL, args).Scan(&kept); err != nil {
				return fmt.Errorf("count client_links kept: %w", err)
			}
			if err := w.store.linksGuard(kept, removed); err != nil {
				return err
			}
		}
	}
	w.history(ch, linksTable, linksHistorySQL, &written)
	return nil
}
