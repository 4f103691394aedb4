package msadstest

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/msads-syncer/syncer/internal/msads"
)

// OpSearchClientLinks is SearchClientLinks (POST ClientLinks/Search).
const OpSearchClientLinks = msads.OpSearchClientLinks

// linksMaxPageSize is the largest PageInfo.Size SearchClientLinks takes.
const linksMaxPageSize = 100

type apiPaging struct {
	Index *int `json:"Index"`
	Size  *int `json:"Size"`
}

// linkRightsLocked returns what credential c's principal may search in
// customer cid: customer links (Super Admin in it) and account links
// (Super Admin, or Standard User; a Standard User scoped to accounts only
// in them: accountOK). The SearchClientLinks reference: "Only a user with
// Super Admin or Standard credentials can add, update, and search for
// client links to advertiser accounts. Only a user with Super Admin
// credentials can [do so for] client links to customers." No other role
// is named, so none other may (an Aggregator, say, who is not also Super
// Admin there, gets 106).
func (s *Server) linkRightsLocked(c *Credential, cid int64) (customer bool, accountOK func(int64) bool) {
	none := func(int64) bool { return false }
	if !s.reachableLocked(c, cid) || s.linkDenied[cid] {
		return false, none
	}
	uid := s.principalLocked(c)
	var scoped []int64
	all := false
	for _, ri := range s.indexLocked().rolesOf[uid] {
		r := s.ds.Roles[ri]
		if r.CustomerID != cid {
			continue
		}
		switch r.RoleID {
		case msads.RoleSuperAdmin:
			customer, all = true, true
		case msads.RoleStandardUser:
			if r.AccountIDs == nil {
				all = true
			}
			scoped = append(scoped, r.AccountIDs...)
		}
	}
	return customer, func(a int64) bool { return all || slices.Contains(scoped, a) }
}

// accountCustomerLocked returns the customer of account a (0 when unknown).
func (s *Server) accountCustomerLocked(a int64) int64 {
	for _, acc := range s.ds.Accounts {
		if acc.ID == a {
			return acc.CustomerID
		}
	}
	return 0
}

// searchClientLinksLocked answers SearchClientLinks: one or two predicates
// by the Predicate reference's rules, PageInfo required with 1 ≤ Size ≤ 100,
// the links of every status sorted by key and paged by Index. A predicate
// the caller may not search answers 106.
func (s *Server) searchClientLinksLocked(c *Credential, req *apiRequest) (any, *apiErr) {
	bad := &apiErr{status: 400, codes: []int{3030}, shape: ShapeApiFault}
	if req.PageInfo == nil {
		return nil, &apiErr{status: 400, codes: []int{3080}, shape: ShapeApiFault}
	}
	if req.PageInfo.Size == nil || *req.PageInfo.Size < 1 || *req.PageInfo.Size > linksMaxPageSize ||
		req.PageInfo.Index == nil || *req.PageInfo.Index < 0 {
		return nil, &apiErr{status: 400, codes: []int{201}, shape: ShapeApiFault,
			msg: "PageInfo.Index must be at least 0 and PageInfo.Size between 1 and 100."}
	}
	if len(req.Predicates) < 1 || len(req.Predicates) > 2 {
		return nil, bad
	}
	values := map[string][]int64{}
	for _, p := range req.Predicates {
		if _, dup := values[p.Field]; dup {
			return nil, bad
		}
		var ops []string
		switch p.Field {
		case "ClientAccountId", "ClientCustomerId":
			ops = []string{"Equals", "In"}
		case "DirectManagingCustomerId", "ManagingCustomerId":
			ops = []string{"Equals"}
		default:
			return nil, bad
		}
		if !slices.Contains(ops, p.Operator) {
			return nil, bad
		}
		parts := strings.Split(p.Value, ",")
		if p.Operator == "Equals" && len(parts) != 1 || len(parts) > 10 {
			return nil, bad
		}
		for _, v := range parts {
			id, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil || id <= 0 {
				return nil, bad
			}
			values[p.Field] = append(values[p.Field], id)
		}
	}
	_, acc := values["ClientAccountId"]
	_, cus := values["ClientCustomerId"]
	_, direct := values["DirectManagingCustomerId"]
	_, managing := values["ManagingCustomerId"]
	if acc && cus || direct && managing {
		return nil, bad
	}
	// Rights: every value the caller searches by.
	for _, id := range values["ClientCustomerId"] {
		if ok, _ := s.linkRightsLocked(c, id); !ok {
			return nil, notAuthorized()
		}
	}
	for _, a := range values["ClientAccountId"] {
		cid := s.accountCustomerLocked(a)
		if _, ok := s.linkRightsLocked(c, cid); cid == 0 || !ok(a) {
			return nil, notAuthorized()
		}
	}
	for _, f := range []string{"DirectManagingCustomerId", "ManagingCustomerId"} {
		for _, id := range values[f] {
			if ok, _ := s.linkRightsLocked(c, id); !ok && !acc {
				return nil, notAuthorized()
			}
		}
	}
	var out []msads.ClientLink
	for _, l := range s.ds.Links {
		typ := cmp.Or(l.Type, msads.LinkTypeAccount)
		switch {
		case acc && (typ != msads.LinkTypeAccount || !slices.Contains(values["ClientAccountId"], l.ClientEntityID)):
			continue
		case cus && (typ != msads.LinkTypeCustomer || !slices.Contains(values["ClientCustomerId"], l.ClientEntityID)):
			continue
		case direct && l.ManagingCustomerID != values["DirectManagingCustomerId"][0]:
			continue
		case managing && !acc && (typ != msads.LinkTypeAccount || l.ManagingCustomerID != values["ManagingCustomerId"][0]):
			continue // deprecated; ignored beside ClientAccountId
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b msads.ClientLink) int {
		return cmp.Or(cmp.Compare(a.ClientEntityID, b.ClientEntityID), cmp.Compare(a.ManagingCustomerID, b.ManagingCustomerID), cmp.Compare(a.Type, b.Type))
	})
	size, index := *req.PageInfo.Size, *req.PageInfo.Index
	from := min(index*size, len(out))
	page := out[from:min(from+size, len(out))]
	list := make([]any, 0, len(page))
	for _, l := range page {
		list = append(list, wireLink(l))
	}
	return map[string]any{"ClientLinks": list}, nil
}

// wireLink serves a link as the API does (the REST "Response JSON" of
// SearchClientLinks: the ClientLink reference's 21 elements, no other):
// ids as strings, unset fields null, an account link's Type null when its
// entity id is even (the reference: an empty Type is an account link),
// CustomerLinkPermission only on customer links.
func wireLink(l msads.ClientLink) map[string]any {
	var typ any = l.Type
	if l.Type == "" || l.Type == msads.LinkTypeAccount && l.ClientEntityID%2 == 0 {
		typ = nil
	}
	var bill any
	if l.IsBillToClient != nil {
		bill = *l.IsBillToClient
	}
	var modBy any
	if l.LastModifiedByUserID != 0 {
		modBy = strconv.FormatInt(l.LastModifiedByUserID, 10)
	}
	return map[string]any{
		"Type": typ, "ClientEntityId": strconv.FormatInt(l.ClientEntityID, 10), "ClientEntityNumber": nullable(l.ClientEntityNumber),
		"ClientEntityName":   nullable(l.ClientEntityName),
		"ManagingCustomerId": strconv.FormatInt(l.ManagingCustomerID, 10), "ManagingCustomerNumber": nullable(l.ManagingCustomerNumber),
		"ManagingCustomerName": nullable(l.ManagingCustomerName), "Note": nullable(l.Note), "Name": nullable(l.Name),
		"InviterEmail": nullable(l.InviterEmail), "InviterName": nullable(l.InviterName), "InviterPhone": nullable(l.InviterPhone),
		"IsBillToClient": bill, "StartDate": dateTime(l.StartDate, l.ClientEntityID), "Status": nullable(l.Status),
		"SuppressNotification": false, "LastModifiedDateTime": dateTime(l.LastModifiedTime, l.ManagingCustomerID),
		"LastModifiedByUserId": modBy, "Timestamp": nil, "ForwardCompatibilityMap": []any{},
		"CustomerLinkPermission": nullable(l.CustomerLinkPermission),
	}
}

// DenyLinkSearches makes every client link search in customerID answer 106,
// as for a credential whose user is not Super Admin there, whatever its
// roles in the data; AllowLinkSearches undoes it.
func (s *Server) DenyLinkSearches(customerID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.linkDenied[customerID] = true
}

// AllowLinkSearches undoes DenyLinkSearches.
func (s *Server) AllowLinkSearches(customerID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.linkDenied, customerID)
}

// SetLinks replaces the data set's client links.
func (s *Server) SetLinks(links []msads.ClientLink) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ds.Links = slices.Clone(links)
}
