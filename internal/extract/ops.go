package extract

import (
	"context"
	"strconv"

	"github.com/msads-syncer/syncer/internal/msads"
)

// UserInfo is one entry of GetUsersInfo.
type UserInfo struct {
	ID       int64
	UserName string
}

// GetCustomersInfo has no paging and no documented maximum TopN: it is
// asked with customersInfoFirstTopN, and again with a TopN customersInfoGrowth
// times larger while the answer fills it.
const (
	customersInfoFirstTopN = 1000
	customersInfoGrowth    = 10
	customersInfoMaxTopN   = 10_000_000
)

func idString(id int64) string { return strconv.FormatInt(id, 10) }

// GetUsersInfo lists the users of a customer (all statuses).
func (c *Client) GetUsersInfo(ctx context.Context, customerID int64) ([]UserInfo, error) {
	return c.getUsersInfo(ctx, customerID, nil)
}

func (c *Client) getUsersInfo(ctx context.Context, customerID int64, st *callStats) ([]UserInfo, error) {
	var out []UserInfo
	// StatusFilter null is what the .NET sample sends; whether it means "all
	// statuses" is unverified (msads-api.md §3), so fall back to "Active" if
	// the service rejects the null as invalid input.
	body := map[string]any{"CustomerId": idString(customerID), "StatusFilter": nil}
	err := c.call(ctx, request{op: msads.OpGetUsersInfo, customerID: customerID, body: body, stats: st},
		func(b []byte) (err error) { out, err = decodeUsersInfo(b); return err })
	if ae := asAPIError(err); ae != nil && ae.Class == ClassPermanent && (ae.HasCode(201) || ae.HasCode(203)) {
		c.log.WarnContext(ctx, "GetUsersInfo rejected StatusFilter null; retrying with Active", "customer_id", customerID)
		body["StatusFilter"] = "Active"
		err = c.call(ctx, request{op: msads.OpGetUsersInfo, customerID: customerID, body: body, stats: st},
			func(b []byte) (err error) { out, err = decodeUsersInfo(b); return err })
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetUser returns a user and the roles visible to the caller. customerID is
// the customer whose listing led to the user: it is sent as the CustomerId
// header and set as User.CustomerID; User.HomeCustomerID is the User
// object's own CustomerId.
func (c *Client) GetUser(ctx context.Context, customerID, userID int64) (msads.User, []msads.Role, error) {
	u, roles, err := c.getUser(ctx, customerID, userID, nil, nil)
	if err != nil {
		return msads.User{}, nil, err
	}
	u.CustomerID = customerID
	return u, roles, nil
}

func (c *Client) getUser(ctx context.Context, customerID, userID int64, st *callStats, onFail func()) (msads.User, []msads.Role, error) {
	var (
		u     msads.User
		roles []msads.Role
	)
	err := c.call(ctx, request{op: msads.OpGetUser, customerID: customerID,
		body: map[string]any{"UserId": idString(userID)}, stats: st, onFail: onFail},
		func(b []byte) (err error) { u, roles, err = decodeUser(b); return err })
	if err != nil {
		return msads.User{}, nil, err
	}
	return u, roles, nil
}

// SearchUserInvitations returns the customer's pending invitations, expired
// ones included.
func (c *Client) SearchUserInvitations(ctx context.Context, customerID int64) ([]msads.Invitation, error) {
	return c.searchUserInvitations(ctx, customerID, nil)
}

func (c *Client) searchUserInvitations(ctx context.Context, customerID int64, st *callStats) ([]msads.Invitation, error) {
	var out []msads.Invitation
	pred := map[string]any{"Field": "CustomerId", "Operator": "Equals", "Value": idString(customerID)}
	body := map[string]any{"Predicates": []any{pred}}
	decode := func(b []byte) (err error) { out, err = decodeInvitations(b); return err }
	err := c.call(ctx, request{op: msads.OpSearchUserInvitations, customerID: customerID, body: body, stats: st}, decode)
	// The docs say Equals; the official samples use In (msads-api.md §3). If
	// the service calls the predicate invalid (3030), try In once.
	if ae := asAPIError(err); ae != nil && ae.HasCode(3030) {
		c.log.WarnContext(ctx, "SearchUserInvitations rejected CustomerId Equals; retrying with In", "customer_id", customerID)
		pred["Operator"] = "In"
		err = c.call(ctx, request{op: msads.OpSearchUserInvitations, customerID: customerID, body: body, stats: st}, decode)
	}
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].CustomerID == 0 {
			out[i].CustomerID = customerID
		}
	}
	return out, nil
}

// GetCustomersInfo lists the customers the credentials can reach
// (discovery). A full answer (as many customers as TopN) is never taken as
// the whole list: it asks again with a larger TopN until the answer is
// shorter than TopN. If a larger TopN brings no more customers, the service
// caps the answer; that is logged, and the caller should add the customers
// of the signed-in user's roles (Principal), as the job does.
func (c *Client) GetCustomersInfo(ctx context.Context) ([]msads.Customer, error) {
	var out []msads.Customer
	for topN := customersInfoFirstTopN; ; topN *= customersInfoGrowth {
		var page []msads.Customer
		err := c.call(ctx, request{op: msads.OpGetCustomersInfo,
			body: map[string]any{"CustomerNameFilter": "", "TopN": topN}},
			func(b []byte) (err error) { page, err = decodeCustomersInfo(b); return err })
		if err != nil {
			return nil, err
		}
		capped := len(out) > 0 && len(page) <= len(out)
		if len(page) > len(out) {
			out = page
		}
		if len(page) < topN || topN >= customersInfoMaxTopN {
			return out, nil
		}
		if capped {
			c.log.WarnContext(ctx, "GetCustomersInfo returns no more customers with a larger TopN; "+
				"customers of the signed-in user's roles are added to the list", "customers", len(out), "top_n", topN)
			return out, nil
		}
	}
}

// Principal returns the signed-in user (GetUser with a null UserId) and the
// roles it holds in the customers it can reach.
func (c *Client) Principal(ctx context.Context) (msads.User, []msads.Role, error) {
	var (
		u     msads.User
		roles []msads.Role
	)
	err := c.call(ctx, request{op: msads.OpGetUser, body: map[string]any{"UserId": nil}},
		func(b []byte) (err error) { u, roles, err = decodeUser(b); return err })
	if err != nil {
		return msads.User{}, nil, err
	}
	c.tokens.notePrincipal(ctx, u.ID, u.UserName)
	return u, roles, nil
}

// ResetAuthFailure forgets a run-fatal token failure remembered by an
// earlier run, so this run asks the token endpoint again (reading the
// token store anew). Call it at the start of each run.
func (c *Client) ResetAuthFailure() {
	c.tokens.resetFailure()
	c.checkMu.Lock()
	c.checks = nil
	c.checkMu.Unlock()
}

// Close waits (within ctx) for token grants still running in the
// background, so a refresh token rotated during a shutdown is saved before
// the process exits.
func (c *Client) Close(ctx context.Context) error { return c.tokens.wait(ctx) }

// GetAccountsInfo lists the customer's own accounts (OnlyParentAccounts).
func (c *Client) GetAccountsInfo(ctx context.Context, customerID int64) ([]msads.Account, error) {
	return c.getAccountsInfo(ctx, customerID, nil)
}

func (c *Client) getAccountsInfo(ctx context.Context, customerID int64, st *callStats) ([]msads.Account, error) {
	var out []msads.Account
	err := c.call(ctx, request{op: msads.OpGetAccountsInfo, customerID: customerID,
		body: map[string]any{"CustomerId": idString(customerID), "OnlyParentAccounts": true}, stats: st},
		func(b []byte) (err error) { out, err = decodeAccountsInfo(b, customerID); return err })
	if err != nil {
		return nil, err
	}
	return out, nil
}
