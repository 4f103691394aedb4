package extract

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/msads-syncer/syncer/internal/msads"
)

// Client link searches (SearchClientLinks; docs/api-notes.md "Client
// links"): paged by PageInfo (Index from 0, Size at most linksPageSize)
// until a page comes back shorter than Size.
const (
	linksPageSize = 100
	// linksMaxPages bounds one search (10,000 pages of 100 links): a
	// service that ignored Index would otherwise be paged for ever.
	linksMaxPages = 10_000
	// linksInBatch is the most values an In predicate takes.
	linksInBatch = 10
)

// linkPredicate is one SearchClientLinks predicate.
func linkPredicate(field, op, value string) map[string]any {
	return map[string]any{"Field": field, "Operator": op, "Value": value}
}

// SearchClientLinks returns every client link matching the predicates
// (one or two; see the Predicate reference), all pages. customerID is sent
// as the CustomerId header.
func (c *Client) SearchClientLinks(ctx context.Context, customerID int64, predicates ...map[string]any) ([]msads.ClientLink, error) {
	return c.searchClientLinks(ctx, customerID, nil, predicates...)
}

func (c *Client) searchClientLinks(ctx context.Context, customerID int64, st *callStats, predicates ...map[string]any) ([]msads.ClientLink, error) {
	var out []msads.ClientLink
	var prevFirst *msads.ClientLink
	for index := 0; ; index++ {
		if index >= linksMaxPages {
			return nil, pagingError(customerID, "more than %d pages of %d links: the service does not seem to page", linksMaxPages, linksPageSize)
		}
		var page []msads.ClientLink
		var entries int // the page's entries, null ones too
		body := map[string]any{"Predicates": predicates, "Ordering": nil,
			"PageInfo": map[string]any{"Index": index, "Size": linksPageSize}}
		err := c.call(ctx, request{op: msads.OpSearchClientLinks, customerID: customerID, body: body, stats: st},
			func(b []byte) (err error) { page, entries, err = decodeClientLinks(b); return err })
		if err != nil {
			return nil, err
		}
		if entries > linksPageSize {
			return nil, pagingError(customerID, "a page of %d links, more than the %d asked for", entries, linksPageSize)
		}
		if len(page) > 0 && prevFirst != nil && sameLink(page[0], *prevFirst) {
			return nil, pagingError(customerID, "page %d repeats page %d: the service ignores PageInfo.Index", index, index-1)
		}
		if entries == linksPageSize && len(page) == 0 {
			return nil, pagingError(customerID, "page %d holds %d null links", index, entries)
		}
		out = append(out, page...)
		if entries < linksPageSize {
			return out, nil
		}
		if len(page) > 0 {
			first := page[0]
			prevFirst = &first
		}
	}
}

// pagingError is the failure of a search whose pages do not add up: 2xx
// answers that are not an answer to the paging asked (permanent: asking
// again gives the same pages; never taken as the complete list).
func pagingError(customerID int64, format string, args ...any) error {
	return &APIError{Op: msads.OpSearchClientLinks, CustomerID: customerID, HTTPStatus: http.StatusOK,
		Class: ClassPermanent, Malformed: true, Err: fmt.Errorf(format, args...)}
}

func sameLink(a, b msads.ClientLink) bool {
	return a.Type == b.Type && a.ClientEntityID == b.ClientEntityID && a.ManagingCustomerID == b.ManagingCustomerID
}

// notPermitted reports whether err is the authorization fault a credential
// without the rights to search client links gets (106 UserIsNotAuthorized:
// only Super Admin may search customer links, Super Admin or Standard
// account links). Such an answer is recorded, never a failure.
func notPermitted(err error) bool {
	ae := asAPIError(err)
	if ae == nil || ae.Class != ClassPermanent || IsRunFatal(err) || ae.Malformed {
		return false
	}
	for _, d := range ae.Errors {
		if d.Code == 106 || strings.EqualFold(d.ErrorCode, "UserIsNotAuthorized") {
			return true
		}
	}
	return false
}

// invalidPredicate reports whether err is the service refusing the
// request itself (a permanent 4xx fault, not an authorization one: the
// predicate, 3030, or its value, 201, or a code the reference does not
// give): then ClientAccountId In is retried as Equals per account, the
// form the reference names for a client customer's user ("search one at a
// time for individual accounts"). If Equals is refused too, the customer
// fails on that answer.
func invalidPredicate(err error) bool {
	ae := asAPIError(err)
	return ae != nil && ae.Class == ClassPermanent && !ae.Malformed && !IsRunFatal(err) && !notPermitted(err) &&
		ae.HTTPStatus >= 400 && ae.HTTPStatus < 500
}

// fetchLinks runs a customer's three link searches (msads.LinkSearch*):
// customer links into it, account links into each of its accounts
// (accounts() gives them once known; ok false when they could not be
// listed), and the links it holds as an agency. A search the credential is
// not permitted is recorded in its LinkSearch; any other failure fails the
// customer, as for the other calls. The links are merged by key.
func (c *Client) fetchLinks(ctx context.Context, customerID int64, st *callStats, accounts func() ([]int64, bool)) ([]msads.LinkSearch, []msads.ClientLink, error) {
	cid := idString(customerID)
	var searches []msads.LinkSearch
	var links []msads.ClientLink
	record := func(kind string, found []msads.ClientLink, err error) error {
		switch {
		case err == nil:
			searches = append(searches, msads.LinkSearch{Kind: kind, Complete: true})
			links = append(links, found...)
		case notPermitted(err):
			searches = append(searches, msads.LinkSearch{Kind: kind, Error: asAPIError(err).FirstCode()})
			c.log.InfoContext(ctx, "client link search not permitted to this credential; recorded, the customer still syncs",
				slog.Int64("customer_id", customerID), slog.String("search", kind), slog.String("error", err.Error()))
		default:
			return fmt.Errorf("%s (%s): %w", msads.OpSearchClientLinks, kind, err)
		}
		return nil
	}

	found, err := c.searchClientLinks(ctx, customerID, st, linkPredicate("ClientCustomerId", "Equals", cid))
	if err := record(msads.LinkSearchIntoCustomer, found, err); err != nil {
		return nil, nil, err
	}

	ids, ok := accounts()
	if !ok {
		return nil, nil, ctx.Err()
	}
	acc, err := c.searchAccountLinks(ctx, customerID, ids, st)
	if err != nil {
		return nil, nil, err
	}
	searches = append(searches, acc.search)
	links = append(links, acc.links...)

	found, err = c.searchClientLinks(ctx, customerID, st, linkPredicate("DirectManagingCustomerId", "Equals", cid))
	if err := record(msads.LinkSearchFromCustomer, found, err); err != nil {
		return nil, nil, err
	}
	return searches, mergeLinks(links), nil
}

type accountLinks struct {
	search msads.LinkSearch
	links  []msads.ClientLink
}

// searchAccountLinks searches the account links into the customer's
// accounts: ClientAccountId In batches of linksInBatch; when the service
// rejects In, Equals per account; when a batch is not permitted, each of
// its accounts alone, so one account the credential may not search does
// not hide the others. The links found get the customer as their client
// customer.
func (c *Client) searchAccountLinks(ctx context.Context, customerID int64, accountIDs []int64, st *callStats) (accountLinks, error) {
	out := accountLinks{search: msads.LinkSearch{Kind: msads.LinkSearchIntoAccounts, AccountIDs: []int64{}}}
	ids := slices.Clone(accountIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	useIn := true
	var denied []string
	one := func(id int64) error {
		found, err := c.searchClientLinks(ctx, customerID, st, linkPredicate("ClientAccountId", "Equals", idString(id)))
		switch {
		case err == nil:
			out.search.AccountIDs = append(out.search.AccountIDs, id)
			out.links = append(out.links, found...)
		case notPermitted(err):
			denied = append(denied, fmt.Sprintf("account %d: %s", id, asAPIError(err).FirstCode()))
		default:
			return fmt.Errorf("%s (%s, account %d): %w", msads.OpSearchClientLinks, msads.LinkSearchIntoAccounts, id, err)
		}
		return nil
	}
	for batch := range slices.Chunk(ids, linksInBatch) {
		if useIn && len(batch) > 1 {
			vals := make([]string, len(batch))
			for i, id := range batch {
				vals[i] = idString(id)
			}
			found, err := c.searchClientLinks(ctx, customerID, st, linkPredicate("ClientAccountId", "In", strings.Join(vals, ",")))
			if err == nil {
				out.search.AccountIDs = append(out.search.AccountIDs, batch...)
				out.links = append(out.links, found...)
				continue
			}
			switch {
			case notPermitted(err):
				// Some account of the batch may be; ask each.
			case invalidPredicate(err):
				c.log.WarnContext(ctx, "SearchClientLinks rejected ClientAccountId In; searching each account with Equals",
					slog.Int64("customer_id", customerID), slog.String("error", err.Error()))
				useIn = false
			default:
				return out, fmt.Errorf("%s (%s): %w", msads.OpSearchClientLinks, msads.LinkSearchIntoAccounts, err)
			}
		}
		for _, id := range batch {
			if err := one(id); err != nil {
				return out, err
			}
		}
	}
	for i := range out.links {
		if out.links[i].Type != msads.LinkTypeCustomer {
			out.links[i].ClientCustomerID = customerID
		}
	}
	out.search.Complete = len(denied) == 0
	out.search.AllAccounts = out.search.Complete
	if len(denied) > 0 {
		out.search.Error = strings.Join(denied, "; ")
		c.log.InfoContext(ctx, "client link search of some accounts not permitted to this credential; recorded, the customer still syncs",
			slog.Int64("customer_id", customerID), slog.Int("accounts_denied", len(denied)), slog.Int("accounts", len(ids)))
	}
	return out, nil
}

// mergeLinks keeps one link per key (type, client entity, managing
// customer), the last found, with the client customer any of them knew.
func mergeLinks(in []msads.ClientLink) []msads.ClientLink {
	out := slices.Clone(in)
	slices.SortStableFunc(out, func(a, b msads.ClientLink) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.ClientEntityID, b.ClientEntityID), cmp.Compare(a.ManagingCustomerID, b.ManagingCustomerID))
	})
	w := 0
	for i := range out {
		if w > 0 && sameLink(out[w-1], out[i]) {
			known := cmp.Or(out[i].ClientCustomerID, out[w-1].ClientCustomerID)
			out[w-1] = out[i]
			out[w-1].ClientCustomerID = known
			continue
		}
		out[w] = out[i]
		w++
	}
	return out[:w]
}
