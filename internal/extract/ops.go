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

// customersInfoTopN is the TopN of GetCustomersInfo: no paging exists and
// no maximum is documented.
const customersInfoTopN = 5000

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
	err := c.call(ctx, request{op: "GetUsersInfo", path: "UsersInfo/Query", customerID: customerID, body: body, stats: st},
		func(b []byte) (err error) { out, err = decodeUsersInfo(b); return err })
	if ae := asAPIError(err); ae != nil && ae.Class == ClassPermanent && (ae.HasCode(201) || ae.HasCode(203)) {
		c.log.WarnContext(ctx, "GetUsersInfo rejected StatusFilter null; retrying with Active", "customer_id", customerID)
		body["StatusFilter"] = "Active"
		err = c.call(ctx, request{op: "GetUsersInfo", path: "UsersInfo/Query", customerID: customerID, body: body, stats: st},
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
	u, roles, err := c.getUser(ctx, customerID, userID, nil)
	if err != nil {
		return msads.User{}, nil, err
	}
	u.CustomerID = customerID
	return u, roles, nil
}

func (c *Client) getUser(ctx context.Context, customerID, userID int64, st *callStats) (msads.User, []msads.Role, error) {
	var (
		u     msads.User
		roles []msads.Role
	)
	err := c.call(ctx, request{op: "GetUser", path: "User/Query", customerID: customerID,
		body: map[string]any{"UserId": idString(userID)}, stats: st},
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
	err := c.call(ctx, request{op: "SearchUserInvitations", path: "UserInvitations/Search", customerID: customerID, body: body, stats: st}, decode)
	// The docs say Equals; the official samples use In (msads-api.md §3). If
	// the service calls the predicate invalid (3030), try In once.
	if ae := asAPIError(err); ae != nil && ae.HasCode(3030) {
		c.log.WarnContext(ctx, "SearchUserInvitations rejected CustomerId Equals; retrying with In", "customer_id", customerID)
		pred["Operator"] = "In"
		err = c.call(ctx, request{op: "SearchUserInvitations", path: "UserInvitations/Search", customerID: customerID, body: body, stats: st}, decode)
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

// GetCustomersInfo lists the customers the credentials can reach (discovery).
func (c *Client) GetCustomersInfo(ctx context.Context) ([]msads.Customer, error) {
	var out []msads.Customer
	err := c.call(ctx, request{op: "GetCustomersInfo", path: "CustomersInfo/Query",
		body: map[string]any{"CustomerNameFilter": "", "TopN": customersInfoTopN}},
		func(b []byte) (err error) { out, err = decodeCustomersInfo(b); return err })
	if err != nil {
		return nil, err
	}
	if len(out) >= customersInfoTopN {
		c.log.WarnContext(ctx, "GetCustomersInfo returned TopN customers; the list may be cut", "top_n", customersInfoTopN)
	}
	return out, nil
}

// GetAccountsInfo lists the customer's own accounts (OnlyParentAccounts).
func (c *Client) GetAccountsInfo(ctx context.Context, customerID int64) ([]msads.Account, error) {
	return c.getAccountsInfo(ctx, customerID, nil)
}

func (c *Client) getAccountsInfo(ctx context.Context, customerID int64, st *callStats) ([]msads.Account, error) {
	var out []msads.Account
	err := c.call(ctx, request{op: "GetAccountsInfo", path: "AccountsInfo/Query", customerID: customerID,
		body: map[string]any{"CustomerId": idString(customerID), "OnlyParentAccounts": true}, stats: st},
		func(b []byte) (err error) { out, err = decodeAccountsInfo(b, customerID); return err })
	if err != nil {
		return nil, err
	}
	return out, nil
}
