// Package msads holds the plain data types of one customer's snapshot: what the
// Customer Management API said about a customer's users, their roles, its pending
// invitations and its accounts, in one sync.
//
// It is the contract between the extract side (which builds a Snapshot from API
// calls) and the load side (which writes it to PostgreSQL). It has no behaviour
// beyond small helpers and imports nothing from the project.
package msads

import (
	"slices"
	"time"
)

// Role ids documented by Microsoft. Unknown ids are kept as they are.
const (
	RoleAdvertiserCampaignManager int32 = 16
	RoleAggregator                int32 = 33
	RoleSuperAdmin                int32 = 41
	RoleViewer                    int32 = 100
	RoleStandardUser              int32 = 203
)

// RoleNames maps the documented role ids to their names.
var RoleNames = map[int32]string{
	RoleAdvertiserCampaignManager: "Advertiser Campaign Manager",
	RoleAggregator:                "Aggregator",
	RoleSuperAdmin:                "Super Admin",
	RoleViewer:                    "Viewer",
	RoleStandardUser:              "Standard User",
}

// Snapshot is everything the API returned for one customer in one sync. A
// Snapshot is complete: it is built only when every call for the customer
// succeeded, so whatever it omits is absent from the API.
type Snapshot struct {
	CustomerID   int64
	CustomerName string // empty when unknown
	FetchedAt    time.Time

	// Users are the users GetUsersInfo listed for CustomerID, each completed by
	// GetUser, or marked unreadable (User.Readable false) when GetUser failed
	// permanently for that user alone.
	Users []User
	// Roles are the CustomerRoles that GetUser returned for the listed users,
	// whatever customer each role belongs to. For every readable user in
	// Users, Roles holds the user's complete set of roles visible to the
	// caller; unreadable users have none here and their stored roles stay.
	Roles []Role
	// RoleCustomers are the customers whose roles this snapshot may remove:
	// a current role of a listed readable user that Roles omits is removed
	// only when its customer is in RoleCustomers, i.e. one the credential
	// that read the snapshot can see (GetUser shows a user's roles only in
	// those). Roles of other customers are added or updated, never
	// removed. nil means no restriction (tests and tools); an empty non-nil
	// slice removes no role.
	RoleCustomers []int64
	// Invitations are the pending invitations (expired ones included) of
	// CustomerID.
	Invitations []Invitation
	// Accounts are the customer's accounts from GetAccountsInfo. They are only
	// meaningful when AccountsFetched is true; otherwise the accounts already
	// stored are left alone.
	Accounts        []Account
	AccountsFetched bool

	// LinkSearches say how each client link search for CustomerID went
	// (SearchClientLinks); nil: links were not searched, and the stored
	// ones stay as they are. Links are what the complete searches found
	// (a not-permitted search finds nothing): a stored link a complete
	// search covers (LinkSearch.Covers) that Links omits is removed.
	LinkSearches []LinkSearch
	Links        []ClientLink
}

// Client link types (ClientLink.Type; an empty Type from the API means
// LinkTypeAccount).
const (
	LinkTypeAccount  = "AccountLink"
	LinkTypeCustomer = "CustomerLink"
)

// Client link search kinds: the three directions the syncer searches a
// customer's client links in.
const (
	// LinkSearchIntoCustomer: ClientCustomerId = the customer: customer
	// links into it (agencies managing the whole customer).
	LinkSearchIntoCustomer = "into_customer"
	// LinkSearchIntoAccounts: ClientAccountId = each of its accounts:
	// account links into them.
	LinkSearchIntoAccounts = "into_accounts"
	// LinkSearchFromCustomer: DirectManagingCustomerId = the customer:
	// the links it holds as an agency (customer and account links).
	LinkSearchFromCustomer = "from_customer"
)

// Client link search outcomes, and the customer_syncs.links_status values
// (LinksStatus).
const (
	LinksComplete     = "complete"
	LinksPartial      = "partial"
	LinksNotPermitted = "not_permitted"
)

// LinkSearch is how one kind of client link search went for a customer.
type LinkSearch struct {
	Kind string // LinkSearch*
	// Complete: every call of the search answered (every page). Else the
	// credential was not permitted (an authorization fault): Error says
	// which and why, and the search covers nothing.
	Complete bool
	Error    string
	// AccountIDs (LinkSearchIntoAccounts): the accounts whose search was
	// complete. AllAccounts: every account of the customer was.
	AccountIDs  []int64
	AllAccounts bool
}

// LinksStatus sums up the link searches: LinksComplete when every search
// was complete, LinksNotPermitted when none was, LinksPartial otherwise;
// "" when links were not searched.
func (s *Snapshot) LinksStatus() string {
	if s.LinkSearches == nil {
		return ""
	}
	done, some := 0, 0
	for _, ls := range s.LinkSearches {
		if ls.Complete {
			done++
		}
		if ls.Complete || len(ls.AccountIDs) > 0 {
			some++
		}
	}
	switch {
	case done == len(s.LinkSearches):
		return LinksComplete
	case some == 0:
		return LinksNotPermitted
	}
	return LinksPartial
}

// LinksError joins the errors of the searches that were not complete ("" when
// none).
func (s *Snapshot) LinksError() string {
	var out string
	for _, ls := range s.LinkSearches {
		if ls.Error == "" {
			continue
		}
		if out != "" {
			out += "; "
		}
		out += ls.Kind + ": " + ls.Error
	}
	return out
}

// ClientLink is one client link (SearchClientLinks): a managing (agency)
// customer's access to a client advertiser account (AccountLink) or a client
// customer (CustomerLink). Its key is (Type, ClientEntityID,
// ManagingCustomerID).
type ClientLink struct {
	Type                       string // LinkTypeAccount or LinkTypeCustomer (or an unknown value, as sent)
	ClientEntityID             int64
	ClientEntityNumber         string
	ClientEntityName           string
	ClientEntityCustomerNumber string
	// ClientCustomerID is the customer the client entity belongs to when
	// known (a customer link: the entity; an account link found by
	// searching a customer's accounts: that customer); 0 when not.
	ClientCustomerID       int64
	ManagingCustomerID     int64
	ManagingCustomerNumber string
	ManagingCustomerName   string
	Status                 string // ClientLinkStatus, as sent
	CustomerLinkPermission string // Administrative or Standard (customer links)
	IsBillToClient         *bool
	StartDate              *time.Time
	InviterEmail           string
	InviterName            string // the inviting user's customer's name
	InviterPhone           string
	Name                   string
	Note                   string
	LastModifiedTime       *time.Time
	LastModifiedByUserID   int64
}

// Detail statuses of a listed user (users.detail_status): whether GetUser
// could read the user the customer's GetUsersInfo listed.
const (
	// DetailOK: GetUser returned the user; every field is current.
	DetailOK = "ok"
	// DetailUnreadable: GetUser failed permanently for this user (106, a
	// lone 105, another permanent 4xx, a null User). Only the listing's
	// fields (id, user name) are current; the user's roles are unknown.
	DetailUnreadable = "unreadable"
	// DetailNotFound: GetUser said the user does not exist (1001
	// UserNotFound): deleted between the listing and the read.
	DetailNotFound = "not_found"
)

// User is one user object as seen through one customer's listing.
type User struct {
	ID int64
	// CustomerID is the customer whose GetUsersInfo listed the user: the owner
	// of the row.
	CustomerID int64
	// HomeCustomerID is the User object's own CustomerId.
	HomeCustomerID   int64
	UserName         string
	Email            string
	FirstName        string
	LastName         string
	JobTitle         string
	Lcid             string
	LifecycleStatus  string
	LastModifiedTime *time.Time

	// DetailStatus is DetailOK ("" means the same) when GetUser read the
	// user, else DetailUnreadable or DetailNotFound. Then only ID, UserName
	// (from the listing) and the Detail fields are meaningful: the stored
	// row keeps its other values, and the user's roles are left as stored.
	DetailStatus string
	// DetailCode, DetailTrackingID and DetailError describe the last failed
	// GetUser (fault code, TrackingId, one-line message); empty when read.
	DetailCode       int
	DetailTrackingID string
	DetailError      string
}

// Readable reports whether GetUser read the user (DetailStatus ok or "").
func (u *User) Readable() bool { return u.DetailStatus == "" || u.DetailStatus == DetailOK }

// Role is one CustomerRole of a user.
type Role struct {
	UserID     int64
	CustomerID int64 // the role's customer
	RoleID     int32
	// AccountIDs lists the accounts the role is scoped to; nil (the API's
	// null or omitted) means every account of the customer (customer-level
	// access); an empty non-nil slice is the API's [] (no account listed)
	// and is stored as such ('{}', not NULL).
	AccountIDs             []int64
	LinkedAccountIDs       []int64
	CustomerLinkPermission string
}

// Invitation is one pending user invitation.
type Invitation struct {
	ID         int64
	CustomerID int64
	Email      string
	FirstName  string
	LastName   string
	RoleID     int32
	// AccountIDs nil means all current and future accounts; empty non-nil
	// is the API's [] and is stored as '{}'.
	AccountIDs     []int64
	Lcid           string
	ExpirationDate *time.Time
}

// Account is one ad account of a customer.
type Account struct {
	ID          int64
	CustomerID  int64
	Name        string
	Number      string
	Status      string
	PauseReason *int32
}

// Customer is a customer (manager account) the credentials can reach.
type Customer struct {
	ID   int64
	Name string
}

// Unreadable returns how many listed users GetUser could not read.
func (s *Snapshot) Unreadable() int {
	n := 0
	for i := range s.Users {
		if !s.Users[i].Readable() {
			n++
		}
	}
	return n
}

// UserIDs returns the distinct user ids of the snapshot's users, sorted.
func (s *Snapshot) UserIDs() []int64 {
	ids := make([]int64, 0, len(s.Users))
	for _, u := range s.Users {
		ids = append(ids, u.ID)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}
