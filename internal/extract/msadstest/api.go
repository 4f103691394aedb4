package msadstest

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

type apiErr struct {
	status    int
	codes     []int  // the errors; the first decides
	msg       string // message of the first error; "" = the code's usual one
	shape     string // "" / ShapeAdApiFaultDetail, ShapeApiFault, ShapeApiFaultBatch
	retry     time.Duration
	retryDate bool
}

func fault(status, code int, msg string) *apiErr {
	return &apiErr{status: status, codes: []int{code}, msg: msg}
}

func (s *Server) writeFault(w http.ResponseWriter, e apiErr) {
	tid := s.trackingID()
	w.Header().Set("TrackingId", tid)
	switch {
	case e.retryDate:
		d := e.retry
		if d <= 0 {
			d = time.Minute
		}
		w.Header().Set("Retry-After", time.Now().Add(d).UTC().Format(http.TimeFormat))
	case e.retry > 0:
		w.Header().Set("Retry-After", strconv.Itoa(int((e.retry+time.Second-1)/time.Second)))
	}
	msg := func(i int) string {
		if i == 0 && e.msg != "" {
			return e.msg
		}
		return faultMessage(e.codes[i])
	}
	switch e.shape {
	case ShapeApiFault:
		ops := []any{}
		for i, c := range e.codes {
			ops = append(ops, map[string]any{"Code": c, "Details": nil, "Message": msg(i)})
		}
		writeJSON(w, e.status, map[string]any{"TrackingId": tid, "Type": "ApiFault", "OperationErrors": ops})
	case ShapeApiFaultBatch:
		// Customer Management BatchErrors carry no ErrorCode (null here).
		batch := []any{}
		for i, c := range e.codes {
			batch = append(batch, map[string]any{"Code": c, "Details": nil, "ErrorCode": nil, "FieldPath": nil,
				"ForwardCompatibilityMap": nil, "Index": i, "Message": msg(i), "Type": "BatchError"})
		}
		writeJSON(w, e.status, map[string]any{"TrackingId": tid, "Type": "ApiFault", "BatchErrors": batch, "OperationErrors": []any{}})
	default:
		errs := []any{}
		for i, c := range e.codes {
			errs = append(errs, map[string]any{"Code": c, "Detail": nil, "ErrorCode": symbols[c], "Message": msg(i)})
		}
		writeJSON(w, e.status, map[string]any{"TrackingId": tid, "Type": "AdApiFaultDetail", "Errors": errs})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type apiRequest struct {
	CustomerID         json.RawMessage `json:"CustomerId"`
	UserID             json.RawMessage `json:"UserId"`
	StatusFilter       *string         `json:"StatusFilter"`
	CustomerNameFilter *string         `json:"CustomerNameFilter"`
	TopN               *int            `json:"TopN"`
	OnlyParentAccounts *bool           `json:"OnlyParentAccounts"`
	Predicates         []struct {
		Field, Operator, Value string
	} `json:"Predicates"`
	PageInfo *apiPaging `json:"PageInfo"`
}

func parseID(raw json.RawMessage) (int64, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	var n int64
	if json.Unmarshal(raw, &n) == nil {
		return n, true
	}
	return 0, false
}

// bodyCustomers returns the customers a call's body names (CustomerId, or
// the invitation predicate's values).
func bodyCustomers(op string, req *apiRequest) []int64 {
	switch op {
	case OpGetUsersInfo, OpGetAccountsInfo:
		if id, ok := parseID(req.CustomerID); ok {
			return []int64{id}
		}
	case OpSearchUserInvitations:
		if len(req.Predicates) == 1 {
			var out []int64
			for v := range strings.SplitSeq(req.Predicates[0].Value, ",") {
				if id, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					out = append(out, id)
				}
			}
			return out
		}
	}
	return nil
}

func headerCustomer(r *http.Request) int64 {
	id, _ := strconv.ParseInt(r.Header.Get("CustomerId"), 10, 64)
	return id
}

// customerOf returns the customer a call is for: the body's, else the
// CustomerId header's.
func customerOf(op string, req *apiRequest, r *http.Request) int64 {
	if ids := bodyCustomers(op, req); len(ids) > 0 {
		return ids[0]
	}
	return headerCustomer(r)
}

// wait sleeps d, or until the request or the server ends; false if ended.
func (s *Server) wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-s.closed:
	}
	return false
}

func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request) {
	op, ok := paths[r.URL.Path]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"Message": "No HTTP resource was found that matches the request URI."})
		return
	}
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"Message": "The requested resource does not support http method '" + r.Method + "'."})
		return
	}
	var req apiRequest
	// Read the body to its end: only then does net/http notice a client
	// that goes away (which ends hanging calls).
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(raw, &req)
	}
	if err != nil {
		s.count(op)
		s.writeFault(w, *fault(400, 201, "The request body is not valid JSON."))
		return
	}
	cust := customerOf(op, &req, r)
	s.count(op)

	// Faults that act before authentication: bursts, latency and hangs.
	faults := s.matchFaults(op, cust)
	if b := s.joinBurst(faults); b != nil {
		select {
		case <-b:
		case <-r.Context().Done():
			return
		case <-s.closed:
			return
		}
	}
	for _, f := range faults {
		if !s.wait(r, f.Latency) {
			return
		}
	}
	if s.takeCounted(faults, func(f *faultState) *int { return &f.Hang }) != nil {
		select {
		case <-r.Context().Done():
		case <-s.closed:
		}
		return
	}

	cred, e, ok := s.authenticate(r)
	if !ok {
		s.writeFault(w, e)
		return
	}
	if s.isRevoked(append(bodyCustomers(op, &req), headerCustomer(r))) {
		s.writeFault(w, *fault(http.StatusUnauthorized, 105, ""))
		return
	}

	if f := s.takeCounted(faults, func(f *faultState) *int { return &f.Status5xxCode0 }); f != nil {
		s.writeFault(w, apiErr{status: 500, codes: []int{0}, shape: f.Shape})
		return
	}
	if s.takeCounted(faults, func(f *faultState) *int { return &f.Malformed }) != nil {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write([]byte(`{"` + op + `": [{"Id": "12`))
		return
	}
	if f, ok := s.throttle(faults); ok {
		st := f.ThrottleStatus
		if st == 0 {
			st = http.StatusTooManyRequests
		}
		s.writeFault(w, apiErr{status: st, codes: []int{117}, shape: f.Shape, retry: f.RetryAfter, retryDate: f.RetryAfterDate})
		return
	}
	if c, ok := s.cannedFault(faults); ok {
		c.write(w)
		return
	}
	if f, ok := s.codeFault(faults); ok {
		codes := f.codes()
		st := f.Status
		if st == 0 {
			st = defaultStatus(codes[0])
		}
		s.writeFault(w, apiErr{status: st, codes: codes, shape: f.Shape})
		return
	}

	var (
		resp any
		fe   *apiErr
	)
	s.mu.Lock()
	switch op {
	case OpGetUsersInfo:
		resp, fe = s.getUsersInfoLocked(cred, &req)
	case OpGetUser:
		resp, fe = s.getUserLocked(cred, &req, r)
	case OpSearchUserInvitations:
		resp, fe = s.searchInvitationsLocked(cred, &req)
	case OpGetCustomersInfo:
		resp, fe = s.getCustomersInfoLocked(cred, &req)
	case OpGetAccountsInfo:
		resp, fe = s.getAccountsInfoLocked(cred, &req)
	case OpSearchClientLinks:
		resp, fe = s.searchClientLinksLocked(cred, &req)
	}
	s.mu.Unlock()
	if fe != nil {
		s.writeFault(w, *fe)
		return
	}
	w.Header().Set("TrackingId", s.trackingID())
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) count(op string) {
	s.mu.Lock()
	s.calls[op]++
	s.mu.Unlock()
}

func (s *Server) isRevoked(customers []int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range customers {
		if c != 0 && s.revoked[c] {
			return true
		}
	}
	return false
}

const invalidCredentials = "Authentication failed. Either supplied credentials are invalid or the account is inactive."

// authenticate checks the developer token (any credential's) and the
// access token, and returns the credential the access token was issued to.
func (s *Server) authenticate(r *http.Request) (*Credential, apiErr, bool) {
	dev := r.Header.Get("DeveloperToken")
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	devKnown := slices.ContainsFunc(s.creds, func(c *Credential) bool { return c.devToken == dev })
	at, known := s.access[tok]
	s.mu.Unlock()
	switch {
	case !devKnown, !ok, tok == "", !known:
		return nil, *fault(401, 105, invalidCredentials), false
	case time.Now().After(at.exp):
		return nil, *fault(401, 109, ""), false
	}
	return at.cred, apiErr{}, true
}

func notAuthorized() *apiErr { return fault(400, 106, "") }

func (s *Server) getUsersInfoLocked(c *Credential, req *apiRequest) (any, *apiErr) {
	cid, ok := parseID(req.CustomerID)
	if !ok {
		return nil, fault(400, 203, "CustomerId is null or invalid.")
	}
	if !s.reachableLocked(c, cid) {
		return nil, notAuthorized()
	}
	list := []any{}
	for _, id := range s.indexLocked().listed[cid] {
		var name, status string
		if i := s.userIndexLocked(id); i >= 0 {
			name, status = s.ds.Users[i].UserName, s.ds.Users[i].LifecycleStatus
		} else if j := slices.IndexFunc(s.ds.StaleListings, func(l StaleListing) bool { return l.CustomerID == cid && l.UserID == id }); j >= 0 {
			name, status = s.ds.StaleListings[j].UserName, s.ds.StaleListings[j].Status
		} else {
			continue
		}
		if req.StatusFilter != nil && !strings.EqualFold(*req.StatusFilter, status) {
			continue
		}
		list = append(list, map[string]any{"Id": strconv.FormatInt(id, 10), "UserName": name})
	}
	return map[string]any{"UsersInfo": list}, nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ids serves a nil slice as null and an empty non-nil one as [].
func ids(in []int64) any {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = strconv.FormatInt(v, 10)
	}
	return out
}

// dateTime formats t (UTC) with id%8 fraction digits (0 to 7) and, by
// (id/8)%3, a "Z", a "+00:00" or no zone suffix.
func dateTime(t *time.Time, id int64) any {
	if t == nil {
		return nil
	}
	if id < 0 {
		id = -id
	}
	layout := "2006-01-02T15:04:05"
	if n := int(id % 8); n > 0 {
		layout += "." + strings.Repeat("0", n)
	}
	out := t.UTC().Format(layout)
	switch (id / 8) % 3 {
	case 0:
		out += "Z"
	case 1:
		out += "+00:00"
	}
	return out
}

// forwardCompatibilityMap has an entry on users whose id%5 is 0, else [].
func forwardCompatibilityMap(id int64) []any {
	if id%5 == 0 {
		return []any{map[string]any{"Key": "SomeFutureField", "Value": "x"}}
	}
	return []any{}
}

func (s *Server) getUserLocked(c *Credential, req *apiRequest, r *http.Request) (any, *apiErr) {
	ctx := headerCustomer(r)
	if h := r.Header.Get("CustomerId"); h != "" {
		if id, err := strconv.ParseInt(h, 10, 64); err != nil || !s.reachableLocked(c, id) {
			return nil, notAuthorized()
		}
	}
	var uid int64
	if len(req.UserID) == 0 || string(req.UserID) == "null" {
		uid = s.principalLocked(c) // the caller
		if uid == 0 {
			return nil, notAuthorized()
		}
	} else {
		id, ok := parseID(req.UserID)
		if !ok {
			return nil, fault(400, 201, "UserId is invalid.")
		}
		uid = id
	}
	if f, ok := s.takeUserFaultLocked(uid, ctx); ok {
		if f.NullUser {
			return map[string]any{"User": nil, "CustomerRoles": nil}, nil
		}
		if f.Code != 0 {
			st := f.Status
			if st == 0 {
				st = defaultStatus(f.Code)
			}
			return nil, fault(st, f.Code, "")
		}
	}
	i := s.userIndexLocked(uid)
	if i < 0 {
		return nil, fault(400, 1001, "")
	}
	u := s.ds.Users[i]
	roles := []any{}
	for _, ri := range s.indexLocked().rolesOf[uid] {
		rl := s.ds.Roles[ri]
		if rl.UserID != uid || !s.reachableLocked(c, rl.CustomerID) {
			continue
		}
		roles = append(roles, map[string]any{"AccountIds": ids(rl.AccountIDs), "CustomerId": strconv.FormatInt(rl.CustomerID, 10),
			"CustomerLinkPermission": nullable(rl.CustomerLinkPermission), "LinkedAccountIds": ids(rl.LinkedAccountIDs), "RoleId": rl.RoleID})
	}
	if len(roles) == 0 {
		return nil, notAuthorized()
	}
	idStr := strconv.FormatInt(u.ID, 10)
	user := map[string]any{
		"ContactInfo": map[string]any{
			"Address": map[string]any{"BusinessName": nil, "City": "Redmond", "CountryCode": "US", "Id": strconv.FormatInt(u.ID+1_000_000, 10),
				"Line1": "1 Microsoft Way", "Line2": nil, "Line3": nil, "Line4": nil, "PostalCode": "98052", "StateOrProvince": "WA", "TimeStamp": nil},
			"ContactByPhone": false, "ContactByPostalMail": false, "Email": nullable(u.Email), "EmailFormat": "Html", "Fax": nil,
			"HomePhone": nil, "Id": strconv.FormatInt(u.ID+2_000_000, 10), "Mobile": nil, "Phone1": "4255550100", "Phone2": nil,
		},
		"CustomerId": strconv.FormatInt(u.HomeCustomerID, 10), "ForwardCompatibilityMap": forwardCompatibilityMap(u.ID), "Id": idStr,
		"JobTitle": nullable(u.JobTitle), "LastModifiedByUserId": idStr, "LastModifiedTime": dateTime(u.LastModifiedTime, u.ID),
		"Lcid": nullable(u.Lcid), "Name": map[string]any{"FirstName": nullable(u.FirstName), "LastName": nullable(u.LastName), "MiddleInitial": nil},
		"Password": nil, "SecretAnswer": nil, "SecretQuestion": "None", "TimeStamp": "AAAAAAFg9xk=",
		"UserLifeCycleStatus": nullable(u.LifecycleStatus), "UserName": u.UserName,
	}
	return map[string]any{"User": user, "CustomerRoles": roles}, nil
}

func (s *Server) searchInvitationsLocked(c *Credential, req *apiRequest) (any, *apiErr) {
	bad := &apiErr{status: 400, codes: []int{3030}, shape: ShapeApiFault}
	if len(req.Predicates) != 1 || req.Predicates[0].Field != "CustomerId" {
		return nil, bad
	}
	p := req.Predicates[0]
	var want []int64
	switch p.Operator {
	case "Equals":
		id, err := strconv.ParseInt(p.Value, 10, 64)
		if err != nil {
			return nil, bad
		}
		want = []int64{id}
	case "In":
		parts := strings.Split(p.Value, ",")
		if len(parts) > 10 {
			return nil, bad
		}
		for _, v := range parts {
			id, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return nil, bad
			}
			want = append(want, id)
		}
	default:
		return nil, bad
	}
	for _, id := range want {
		if !s.reachableLocked(c, id) {
			return nil, notAuthorized()
		}
	}
	list := []any{}
	for _, inv := range s.ds.Invitations {
		if !slices.Contains(want, inv.CustomerID) {
			continue
		}
		list = append(list, map[string]any{"AccountIds": ids(inv.AccountIDs), "CustomerId": strconv.FormatInt(inv.CustomerID, 10),
			"Email": inv.Email, "ExpirationDate": dateTime(inv.ExpirationDate, inv.ID), "FirstName": nullable(inv.FirstName),
			"Id": strconv.FormatInt(inv.ID, 10), "LastName": nullable(inv.LastName), "Lcid": nullable(inv.Lcid), "RoleId": inv.RoleID})
	}
	return map[string]any{"UserInvitations": list}, nil
}

func (s *Server) getCustomersInfoLocked(cred *Credential, req *apiRequest) (any, *apiErr) {
	if req.TopN == nil || *req.TopN < 1 {
		return nil, fault(400, 201, "TopN must be at least 1.")
	}
	limit := *req.TopN
	if s.customersCap > 0 {
		limit = min(limit, s.customersCap)
	}
	prefix := ""
	if req.CustomerNameFilter != nil {
		prefix = strings.ToLower(*req.CustomerNameFilter)
	}
	list := []any{}
	for _, c := range s.ds.Customers {
		if len(list) >= limit {
			break
		}
		if !s.reachableLocked(cred, c.ID) || s.hidden[c.ID] {
			continue
		}
		if strings.HasPrefix(strings.ToLower(c.Name), prefix) {
			list = append(list, map[string]any{"Id": strconv.FormatInt(c.ID, 10), "Name": c.Name})
		}
	}
	return map[string]any{"CustomersInfo": list}, nil
}

func (s *Server) getAccountsInfoLocked(c *Credential, req *apiRequest) (any, *apiErr) {
	var cid int64
	if len(req.CustomerID) == 0 || string(req.CustomerID) == "null" {
		for _, x := range s.ds.Customers {
			if c.customers == nil || c.customers[x.ID] {
				cid = x.ID
				break
			}
		}
	} else {
		id, ok := parseID(req.CustomerID)
		if !ok {
			return nil, fault(400, 201, "CustomerId is invalid.")
		}
		cid = id
	}
	if !s.reachableLocked(c, cid) {
		return nil, notAuthorized()
	}
	list := []any{}
	for _, a := range s.ds.Accounts {
		if a.CustomerID != cid {
			continue
		}
		var pr any
		if a.PauseReason != nil {
			pr = *a.PauseReason
		}
		list = append(list, map[string]any{"AccountLifeCycleStatus": a.Status, "Id": strconv.FormatInt(a.ID, 10),
			"Name": a.Name, "Number": a.Number, "PauseReason": pr})
	}
	return map[string]any{"AccountsInfo": list}, nil
}
