package msadstest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/msads"
)

func TestGenerateIsDeterministic(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	a, b := GenerateAt(1, 5, 20, now), GenerateAt(1, 5, 20, now)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different data sets")
	}
	if reflect.DeepEqual(a, GenerateAt(2, 5, 20, now)) {
		t.Fatal("different seeds, same data set")
	}
	if got := len(a.CustomerIDs()); got != 5 {
		t.Errorf("customers = %d", got)
	}
	listings, expired := 0, 0
	for _, c := range a.CustomerIDs() {
		listings += len(a.ListedUserIDs(c))
	}
	for _, inv := range a.Invitations {
		if inv.ExpirationDate.Before(now) {
			expired++
		}
	}
	if listings != 100 || a.DistinctListedUsers() >= listings {
		t.Errorf("listings = %d, distinct = %d: want 100 listings with some shared users", listings, a.DistinctListedUsers())
	}
	if expired == 0 || expired == len(a.Invitations) {
		t.Errorf("expired invitations = %d of %d, want some", expired, len(a.Invitations))
	}
}

// post calls the simulator raw and decodes the JSON answer.
func post(t *testing.T, s *Server, path, token string, body string, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.APIURL()+"/CustomerManagement/v13/"+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("DeveloperToken", s.DeveloperToken())
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: %v: %s", path, err, b)
	}
	return resp.StatusCode, out
}

func accessToken(t *testing.T, s *Server) string {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {s.RefreshToken()}, "client_id": {s.ClientID()},
		"client_secret": {s.ClientSecret()}, "scope": {"https://ads.microsoft.com/msads.manage offline_access"}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.TokenURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresIn    int    `json:"expires_in"`
	}
	json.NewDecoder(resp.Body).Decode(&tr)
	if tr.AccessToken == "" || tr.RefreshToken == "" || tr.ExpiresIn <= 0 {
		t.Fatalf("token response %+v", tr)
	}
	return tr.AccessToken
}

func TestWireFormat(t *testing.T) {
	t.Parallel()
	ds := GenerateAt(9, 2, 6, time.Now())
	s := NewServer(ds.Clone())
	t.Cleanup(s.Close)
	tok := accessToken(t, s)
	cid := ds.CustomerIDs()[0]
	st, out := post(t, s, "UsersInfo/Query", tok, `{"CustomerId":"`+itoa(cid)+`","StatusFilter":null}`, nil)
	if st != 200 {
		t.Fatalf("status %d %v", st, out)
	}
	list := out["UsersInfo"].([]any)
	if len(list) != len(ds.ListedUserIDs(cid)) {
		t.Fatalf("listed %d users", len(list))
	}
	zoned, unzoned := 0, 0
	for _, e := range list {
		id := e.(map[string]any)["Id"].(string) // ids are strings
		st, out := post(t, s, "User/Query", tok, `{"UserId":"`+id+`"}`, map[string]string{"CustomerId": itoa(cid)})
		if st != 200 {
			t.Fatalf("GetUser %s: %d %v", id, st, out)
		}
		u := out["User"].(map[string]any)
		for _, f := range []string{"ContactInfo", "CustomerId", "ForwardCompatibilityMap", "Id", "JobTitle", "LastModifiedByUserId",
			"LastModifiedTime", "Lcid", "Name", "Password", "SecretAnswer", "SecretQuestion", "TimeStamp", "UserLifeCycleStatus", "UserName"} {
			if _, ok := u[f]; !ok {
				t.Errorf("User field %s missing", f)
			}
		}
		if u["Password"] != nil {
			t.Error("Password not null")
		}
		if lm := u["LastModifiedTime"].(string); strings.HasSuffix(lm, "Z") {
			zoned++
		} else {
			unzoned++
		}
		for _, r := range out["CustomerRoles"].([]any) {
			role := r.(map[string]any)
			if _, ok := role["AccountIds"]; !ok {
				t.Error("AccountIds missing (want explicit null)")
			}
		}
	}
	if zoned == 0 || unzoned == 0 {
		t.Errorf("dates: %d with Z, %d without; want both", zoned, unzoned)
	}
	// Faults: bad token, unknown customer, throttling.
	if st, out := post(t, s, "UsersInfo/Query", "nope", `{"CustomerId":"1"}`, nil); st != 401 || code(out) != 105 {
		t.Errorf("bad token: %d %v", st, out)
	}
	if st, out := post(t, s, "UsersInfo/Query", tok, `{"CustomerId":"1"}`, nil); st != 400 || code(out) != 106 {
		t.Errorf("unknown customer: %d %v", st, out)
	}
	s.SetFault(AnyOp, Fault{Throttle: 1})
	if st, out := post(t, s, "UsersInfo/Query", tok, `{"CustomerId":"`+itoa(cid)+`"}`, nil); st != 429 || code(out) != 117 || out["Type"] != "AdApiFaultDetail" {
		t.Errorf("throttle: %d %v", st, out)
	}
	if st, out := post(t, s, "UserInvitations/Search", tok, `{"Predicates":[{"Field":"Email","Operator":"Equals","Value":"x"}]}`, nil); st != 400 || out["Type"] != "ApiFault" {
		t.Errorf("bad predicate: %d %v", st, out)
	}
	s.ExpireAccessTokens()
	if st, out := post(t, s, "UsersInfo/Query", tok, `{"CustomerId":"`+itoa(cid)+`"}`, nil); st != 401 || code(out) != 109 {
		t.Errorf("expired token: %d %v", st, out)
	}
}

func code(fault map[string]any) int {
	errs, _ := fault["Errors"].([]any)
	if len(errs) == 0 {
		return -1
	}
	c, _ := errs[0].(map[string]any)["Code"].(float64)
	return int(c)
}

func itoa(v int64) string { b, _ := json.Marshal(v); return string(b) }

func TestMutations(t *testing.T) {
	t.Parallel()
	ds := GenerateAt(11, 2, 5, time.Now())
	s := NewServer(ds.Clone())
	t.Cleanup(s.Close)
	cid := ds.CustomerIDs()[0]
	inv := ds.Invitations[0]
	uid := s.AcceptInvitation(inv.ID)
	got := s.Dataset()
	if uid == 0 || len(got.Invitations) != len(ds.Invitations)-1 {
		t.Fatalf("AcceptInvitation: uid %d, invitations %d", uid, len(got.Invitations))
	}
	if ids := got.ListedUserIDs(inv.CustomerID); ids[len(ids)-1] != uid {
		t.Errorf("accepted user not listed: %v", ids)
	}
	victim := ds.ListedUserIDs(cid)[0]
	s.RemoveUser(cid, victim)
	for _, id := range s.Dataset().ListedUserIDs(cid) {
		if id == victim {
			t.Error("removed user still listed")
		}
	}
}

// rawResp is an undecoded answer.
type rawResp struct {
	status int
	header http.Header
	body   string
}

func (r rawResp) json(t *testing.T) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal([]byte(r.body), &out); err != nil {
		t.Fatalf("not JSON (%d): %v: %q", r.status, err, r.body)
	}
	return out
}

func postRaw(t *testing.T, s *Server, path, token, body string, hdr map[string]string) rawResp {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.APIURL()+"/CustomerManagement/v13/"+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("DeveloperToken", s.DeveloperToken())
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResp{resp.StatusCode, resp.Header, string(b)}
}

func tokenRaw(t *testing.T, s *Server, form url.Values) rawResp {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.TokenURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResp{resp.StatusCode, resp.Header, string(b)}
}

func refreshForm(s *Server) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {s.RefreshToken()}, "client_id": {s.ClientID()},
		"client_secret": {s.ClientSecret()}, "scope": {"https://ads.microsoft.com/msads.manage offline_access"}}
}

// firstErr returns Code and ErrorCode of an AdApiFaultDetail's first error.
func firstErr(t *testing.T, f map[string]any) (int, any) {
	t.Helper()
	errs, _ := f["Errors"].([]any)
	if f["Type"] != "AdApiFaultDetail" || len(errs) == 0 {
		t.Fatalf("not an AdApiFaultDetail: %v", f)
	}
	e := errs[0].(map[string]any)
	return int(e["Code"].(float64)), e["ErrorCode"]
}

func getUser(t *testing.T, s *Server, tok string, uid int64, cust int64) (int, map[string]any) {
	t.Helper()
	var hdr map[string]string
	if cust != 0 {
		hdr = map[string]string{"CustomerId": itoa(cust)}
	}
	return post(t, s, "User/Query", tok, `{"UserId":"`+itoa(uid)+`"}`, hdr)
}

func newSim(t *testing.T, ds *Dataset, opts ...Option) (*Server, string) {
	t.Helper()
	s := NewServer(ds, opts...)
	t.Cleanup(s.Close)
	return s, accessToken(t, s)
}

// readableUsers returns users of cust that hold a role there and no fault.
func readableUsers(ds *Dataset, cust int64) []int64 {
	var out []int64
	for _, id := range ds.ListedUserIDs(cust) {
		if _, f := ds.UserFaults[id]; !f && slices.ContainsFunc(ds.Users, func(u msads.User) bool { return u.ID == id }) {
			out = append(out, id)
		}
	}
	return out
}

func TestUserFaults(t *testing.T) {
	t.Parallel()
	ds := GenerateAt(5, 2, 6, time.Now())
	c0, c1 := ds.CustomerIDs()[0], ds.CustomerIDs()[1]
	us := readableUsers(ds, c0)
	a, b, c, d := us[0], us[1], us[2], us[3]
	ds.UserFaults = map[int64]UserFault{d: {Code: 210}}
	clone := ds.Clone()
	clone.UserFaults[d] = UserFault{Code: 999}
	if ds.UserFaults[d].Code != 210 {
		t.Fatal("Clone shares UserFaults")
	}
	s, tok := newSim(t, ds)

	s.SetUserFault(a, 0, UserFault{Code: 106})
	if st, out := getUser(t, s, tok, a, c0); st != 400 {
		t.Errorf("106 user: %d %v", st, out)
	} else if code, sym := firstErr(t, out); code != 106 || sym != "UserIsNotAuthorized" {
		t.Errorf("106 user: %d %v", code, sym)
	}
	if st, out := getUser(t, s, tok, b, c0); st != 200 || out["User"] == nil {
		t.Errorf("other user affected: %d %v", st, out)
	}
	// A fault in one customer context only.
	s.SetUserFault(b, c0, UserFault{Code: 105})
	if st, out := getUser(t, s, tok, b, c0); st != 401 {
		t.Errorf("105 in context: %d %v", st, out)
	} else if code, _ := firstErr(t, out); code != 105 {
		t.Errorf("105 in context: code %d", code)
	}
	if st, out := getUser(t, s, tok, b, c1); st == 401 || (st == 400 && code(out) == 105) {
		t.Errorf("105 leaked into customer %d: %d %v", c1, st, out)
	}
	if st, _ := getUser(t, s, tok, b, 0); st != 200 {
		t.Errorf("105 leaked into the no-header context: %d", st)
	}
	s.SetUserFault(b, c0, UserFault{}) // clears
	if st, _ := getUser(t, s, tok, b, c0); st != 200 {
		t.Errorf("cleared fault still acts: %d", st)
	}
	// NullUser, once.
	s.SetUserFault(c, 0, UserFault{NullUser: true, Times: 1})
	st, out := getUser(t, s, tok, c, c0)
	if v, ok := out["User"]; st != 200 || !ok || v != nil {
		t.Errorf("NullUser: %d %v", st, out)
	}
	if v, ok := out["CustomerRoles"]; !ok || v != nil {
		t.Errorf("NullUser CustomerRoles: %v", out)
	}
	if st, out := getUser(t, s, tok, c, c0); st != 200 || out["User"] == nil {
		t.Errorf("Times 1 acted twice: %d %v", st, out)
	}
	// Dataset.UserFaults apply in every context.
	for _, cx := range []int64{0, c0} {
		if st, out := getUser(t, s, tok, d, cx); st != 400 {
			t.Errorf("dataset fault: %d %v", st, out)
		} else if code, sym := firstErr(t, out); code != 210 || sym != "EntityNotExistent" {
			t.Errorf("dataset fault: %d %v", code, sym)
		}
	}
	// An unknown code has ErrorCode "", an explicit Status is used.
	s.SetUserFault(a, 0, UserFault{Code: 4242, Status: 403})
	if st, out := getUser(t, s, tok, a, c0); st != 403 {
		t.Errorf("unknown code: %d %v", st, out)
	} else if code, sym := firstErr(t, out); code != 4242 || sym != "" {
		t.Errorf("unknown code: %d %q", code, sym)
	}
	// A user id that does not exist: 1001 UserNotFound.
	if st, out := getUser(t, s, tok, 42, c0); st != 400 {
		t.Errorf("unknown user: %d %v", st, out)
	} else if code, sym := firstErr(t, out); code != 1001 || sym != "UserNotFound" {
		t.Errorf("unknown user: %d %v", code, sym)
	}
	// ClearFaults clears SetUserFault faults but not the data's.
	s.ClearFaults()
	if st, _ := getUser(t, s, tok, a, c0); st != 200 {
		t.Errorf("ClearFaults left a user fault: %d", st)
	}
	if st, _ := getUser(t, s, tok, d, c0); st != 400 {
		t.Errorf("ClearFaults removed a data fault: %d", st)
	}
	if got := s.Dataset().UserFaults[d]; got.Code != 210 {
		t.Errorf("Dataset() lost UserFaults: %+v", got)
	}
}

func TestDeleteUserKeepListing(t *testing.T) {
	t.Parallel()
	ds := GenerateAt(6, 2, 5, time.Now())
	c0 := ds.CustomerIDs()[0]
	s, tok := newSim(t, ds)
	victim := readableUsers(ds, c0)[1]
	s.DeleteUserKeepListing(c0, victim)

	_, out := post(t, s, "UsersInfo/Query", tok, `{"CustomerId":"`+itoa(c0)+`","StatusFilter":null}`, nil)
	found := false
	for _, e := range out["UsersInfo"].([]any) {
		if e.(map[string]any)["Id"] == strconv.FormatInt(victim, 10) {
			found = e.(map[string]any)["UserName"] != ""
		}
	}
	if !found {
		t.Errorf("deleted user no longer listed (or without its name): %v", out)
	}
	if !slices.Contains(s.Dataset().ListedUserIDs(c0), victim) {
		t.Error("ListedUserIDs misses the stale listing")
	}
	st, out := getUser(t, s, tok, victim, c0)
	if st != 400 {
		t.Fatalf("GetUser of the deleted user: %d %v", st, out)
	}
	if code, sym := firstErr(t, out); code != 1001 || sym != "UserNotFound" {
		t.Errorf("GetUser of the deleted user: %d %v", code, sym)
	}
	// It comes back.
	s.AddUser(c0, msads.User{ID: victim, UserName: "back@contoso.com", LifecycleStatus: "Active"}, nil)
	if st, _ := getUser(t, s, tok, victim, c0); st != 200 {
		t.Errorf("re-added user: %d", st)
	}
	if n := len(s.Dataset().StaleListings); n != 0 {
		t.Errorf("stale listings after AddUser = %d", n)
	}
}

func TestCannedResponses(t *testing.T) {
	t.Parallel()
	ds := GenerateAt(7, 1, 3, time.Now())
	c0 := ds.CustomerIDs()[0]
	s, tok := newSim(t, ds)
	body := `{"CustomerId":"` + itoa(c0) + `"}`
	inv := `{"Predicates":[{"Field":"CustomerId","Operator":"Equals","Value":"` + itoa(c0) + `"}]}`

	s.SetFault(OpGetUsersInfo, Fault{Response: EmptyObject()})
	if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.status != 200 || strings.TrimSpace(r.body) != "{}" {
		t.Errorf("EmptyObject: %d %q", r.status, r.body)
	}
	// After authentication, like code faults.
	if r := postRaw(t, s, "UsersInfo/Query", "bad", body, nil); r.status != 401 {
		t.Errorf("canned before authentication: %d %q", r.status, r.body)
	}
	s.SetFault(OpGetUsersInfo, Fault{Response: HTMLPage(502)})
	if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.status != 502 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") ||
		!strings.Contains(r.body, "<html") {
		t.Errorf("HTMLPage: %d %v %q", r.status, r.header, r.body)
	}
	s.SetFault(OpGetUsersInfo, Fault{Response: EmptyBody(500)})
	if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.status != 500 || r.body != "" || !strings.Contains(r.header.Get("Content-Type"), "json") {
		t.Errorf("EmptyBody: %d %v %q", r.status, r.header, r.body)
	}
	for _, st := range []int{401, 408, 502, 504} {
		s.SetFault(OpGetUsersInfo, Fault{Response: StatusOnly(st)})
		if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.status != st || r.body != "" || r.header.Get("Content-Type") != "" {
			t.Errorf("StatusOnly(%d): %d %v %q", st, r.status, r.header, r.body)
		}
	}
	s.SetFault(OpSearchUserInvitations, Fault{Response: NullList(OpSearchUserInvitations)})
	r := postRaw(t, s, "UserInvitations/Search", tok, inv, nil)
	if v, ok := r.json(t)["UserInvitations"]; r.status != 200 || !ok || v != nil {
		t.Errorf("NullList: %d %q", r.status, r.body)
	}
	for op, field := range map[string]string{OpGetUsersInfo: "UsersInfo", OpGetUser: "User", OpGetCustomersInfo: "CustomersInfo", OpGetAccountsInfo: "AccountsInfo"} {
		if !strings.Contains(NullList(op).Body, `"`+field+`": null`) {
			t.Errorf("NullList(%s) = %s", op, NullList(op).Body)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("NullList of an unknown op did not panic")
			}
		}()
		NullList("Nope")
	}()
	// Times: only the next N calls; headers are sent.
	c := HTMLPage(503)
	c.Times = 1
	c.Header = map[string]string{"Retry-After": "5"}
	s.SetFault(OpGetUsersInfo, Fault{Response: c})
	c.Times = 100 // SetFault keeps its own copy
	if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.status != 503 || r.header.Get("Retry-After") != "5" {
		t.Errorf("canned with header: %d %v", r.status, r.header)
	}
	if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.status != 200 {
		t.Errorf("canned Times 1 acted twice: %d %q", r.status, r.body)
	}
}

func TestFaultShapesAndCodes(t *testing.T) {
	t.Parallel()
	ds := GenerateAt(8, 1, 3, time.Now())
	c0 := ds.CustomerIDs()[0]
	s, tok := newSim(t, ds)
	body := `{"CustomerId":"` + itoa(c0) + `"}`

	s.SetFault(OpGetUsersInfo, Fault{Codes: []int{105, 106, 4242}})
	r := postRaw(t, s, "UsersInfo/Query", tok, body, nil)
	out := r.json(t)
	errs, _ := out["Errors"].([]any)
	if r.status != 401 || out["Type"] != "AdApiFaultDetail" || len(errs) != 3 {
		t.Fatalf("multi-code fault: %d %v", r.status, out)
	}
	if e := errs[2].(map[string]any); e["Code"] != 4242.0 || e["ErrorCode"] != "" {
		t.Errorf("unknown code entry: %v", e)
	}
	if tid := r.header.Get("TrackingId"); tid == "" || out["TrackingId"] != tid {
		t.Errorf("TrackingId header %q, body %v", tid, out["TrackingId"])
	}

	s.SetFault(OpGetUsersInfo, Fault{Codes: []int{106, 1001}, Shape: ShapeApiFault})
	r = postRaw(t, s, "UsersInfo/Query", tok, body, nil)
	out = r.json(t)
	ops, _ := out["OperationErrors"].([]any)
	if r.status != 400 || out["Type"] != "ApiFault" || len(ops) != 2 || out["Errors"] != nil {
		t.Fatalf("ApiFault: %d %v", r.status, out)
	}
	if e := ops[0].(map[string]any); e["Code"] != 106.0 || !hasKeys(e, "Code", "Details", "Message") || hasKeys(e, "ErrorCode") {
		t.Errorf("OperationError: %v", e)
	}
	if out["TrackingId"] != r.header.Get("TrackingId") {
		t.Error("ApiFault TrackingId")
	}

	s.SetFault(OpGetUsersInfo, Fault{Code: 201, Status: 400, Shape: ShapeApiFaultBatch})
	r = postRaw(t, s, "UsersInfo/Query", tok, body, nil)
	out = r.json(t)
	batch, _ := out["BatchErrors"].([]any)
	if r.status != 400 || out["Type"] != "ApiFault" || len(batch) != 1 {
		t.Fatalf("ApiFaultBatch: %d %v", r.status, out)
	}
	if o, ok := out["OperationErrors"].([]any); !ok || len(o) != 0 {
		t.Errorf("ApiFaultBatch OperationErrors = %v, want []", out["OperationErrors"])
	}
	if e := batch[0].(map[string]any); e["Code"] != 201.0 || !hasKeys(e, "Code", "Details", "ErrorCode", "FieldPath", "ForwardCompatibilityMap", "Index", "Message", "Type") {
		t.Errorf("BatchError: %v", e)
	}

	// Shape applies to 5xx and throttling answers too.
	s.SetFault(OpGetUsersInfo, Fault{Status5xxCode0: 1, Throttle: 1, Shape: ShapeApiFault})
	if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.status != 500 || r.json(t)["Type"] != "ApiFault" {
		t.Errorf("5xx shape: %d %q", r.status, r.body)
	}
	if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.status != 429 || r.json(t)["Type"] != "ApiFault" {
		t.Errorf("throttle shape: %d %q", r.status, r.body)
	}
}

func hasKeys(m map[string]any, keys ...string) bool {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	ds := GenerateAt(9, 1, 2, time.Now())
	body := `{"CustomerId":"` + itoa(ds.CustomerIDs()[0]) + `"}`
	s, tok := newSim(t, ds)
	s.SetFault(OpGetUsersInfo, Fault{Throttle: 1, RetryAfter: 30 * time.Second, RetryAfterDate: true})
	r := postRaw(t, s, "UsersInfo/Query", tok, body, nil)
	when, err := http.ParseTime(r.header.Get("Retry-After"))
	if r.status != 429 || err != nil {
		t.Fatalf("Retry-After date: %d %q %v", r.status, r.header.Get("Retry-After"), err)
	}
	if d := time.Until(when); d < 25*time.Second || d > 32*time.Second {
		t.Errorf("Retry-After date is %v away, want about 30s", d)
	}
	s.SetFault(OpGetUsersInfo, Fault{Throttle: 1, RetryAfter: 1500 * time.Millisecond})
	if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.header.Get("Retry-After") != "2" {
		t.Errorf("Retry-After seconds = %q", r.header.Get("Retry-After"))
	}
}

func TestFaultZeroClears(t *testing.T) {
	t.Parallel()
	ds := GenerateAt(10, 1, 2, time.Now())
	c0 := ds.CustomerIDs()[0]
	body := `{"CustomerId":"` + itoa(c0) + `"}`
	s, tok := newSim(t, ds)
	for _, f := range []Fault{{Codes: []int{106}}, {Response: StatusOnly(502)}, {Code: 106, Shape: ShapeApiFault}} {
		s.SetFault(OpGetUsersInfo, f)
		if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.status == 200 {
			t.Errorf("fault %+v did not act", f)
		}
		// A fault that does nothing (only passive fields) clears.
		s.SetFault(OpGetUsersInfo, Fault{Status: 400, Shape: ShapeApiFault, RetryAfterDate: true})
		if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.status != 200 {
			t.Errorf("fault %+v not cleared: %d", f, r.status)
		}
	}
	s.SetFault(OpGetUsersInfo, Fault{CustomerID: c0, Codes: []int{106}})
	s.SetFault(OpGetUsersInfo, Fault{CustomerID: c0})
	if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); r.status != 200 {
		t.Errorf("customer fault not cleared: %d", r.status)
	}
	// Codes are copied: changing the caller's slice changes nothing.
	codes := []int{106}
	s.SetFault(OpGetUsersInfo, Fault{Codes: codes})
	codes[0] = 0
	if r := postRaw(t, s, "UsersInfo/Query", tok, body, nil); code(r.json(t)) != 106 {
		t.Errorf("Codes aliased: %q", r.body)
	}
}

func TestRevokeCustomerAccess(t *testing.T) {
	t.Parallel()
	ds := GenerateAt(12, 2, 3, time.Now())
	c0, c1 := ds.CustomerIDs()[0], ds.CustomerIDs()[1]
	s, _ := newSim(t, ds)
	s.RevokeCustomerAccess(c0)
	tok := accessToken(t, s) // fresh
	u0, u1 := readableUsers(ds, c0)[0], readableUsers(ds, c1)[0]
	calls := []struct {
		path, body string
		hdr        map[string]string
	}{
		{"UsersInfo/Query", `{"CustomerId":"` + itoa(c0) + `"}`, nil},
		{"AccountsInfo/Query", `{"CustomerId":"` + itoa(c0) + `"}`, nil},
		{"UserInvitations/Search", `{"Predicates":[{"Field":"CustomerId","Operator":"Equals","Value":"` + itoa(c0) + `"}]}`, nil},
		{"User/Query", `{"UserId":"` + itoa(u0) + `"}`, map[string]string{"CustomerId": itoa(c0)}},
		{"CustomersInfo/Query", `{"TopN":10}`, map[string]string{"CustomerId": itoa(c0)}},
	}
	for _, c := range calls {
		if st, out := post(t, s, c.path, tok, c.body, c.hdr); st != 401 || code(out) != 105 {
			t.Errorf("%s in revoked customer: %d %v", c.path, st, out)
		}
	}
	if st, out := post(t, s, "UsersInfo/Query", tok, `{"CustomerId":"`+itoa(c1)+`"}`, nil); st != 200 {
		t.Errorf("other customer: %d %v", st, out)
	}
	if st, out := getUser(t, s, tok, u1, c1); st != 200 {
		t.Errorf("other customer GetUser: %d %v", st, out)
	}
	s.RestoreCustomerAccess(c0)
	if st, out := post(t, s, "UsersInfo/Query", tok, `{"CustomerId":"`+itoa(c0)+`"}`, nil); st != 200 {
		t.Errorf("restored: %d %v", st, out)
	}
}

func TestTokenErrors(t *testing.T) {
	t.Parallel()
	s := NewServer(GenerateAt(13, 1, 2, time.Now()))
	t.Cleanup(s.Close)
	cases := []struct {
		e      TokenError
		err    string
		code   int
		status int
	}{
		{TokenError{Code: 70008}, "invalid_grant", 70008, 400},
		{TokenError{Code: 700082}, "invalid_grant", 700082, 400},
		{TokenError{Code: 50173}, "invalid_grant", 50173, 400},
		{TokenError{Code: 54005}, "invalid_grant", 54005, 400},
		{TokenError{Code: 70000}, "invalid_grant", 70000, 400},
		{TokenError{Code: 7000215}, "invalid_client", 7000215, 401},
		{TokenError{Code: 7000222}, "invalid_client", 7000222, 401},
		{TokenError{Code: 700016}, "invalid_client", 700016, 401},
		{TokenError{Code: 700025}, "invalid_client", 700025, 401},
		{TokenError{Code: 50076}, "interaction_required", 50076, 400},
		{TokenError{Code: 50079}, "interaction_required", 50079, 400},
		{TokenError{Code: 65001}, "interaction_required", 65001, 400},
		{TokenError{Code: 70011}, "invalid_scope", 70011, 400},
		{TokenError{Error: "temporarily_unavailable"}, "temporarily_unavailable", 90033, 503},
		{TokenError{Error: "invalid_grant"}, "invalid_grant", 70008, 400},
		{TokenError{Error: "invalid_grant", Code: 70000, Status: 401}, "invalid_grant", 70000, 401},
	}
	for _, c := range cases {
		s.SetTokenError(c.e)
		r := tokenRaw(t, s, refreshForm(s))
		out := r.json(t)
		desc, _ := out["error_description"].(string)
		codes, _ := out["error_codes"].([]any)
		if r.status != c.status || out["error"] != c.err || len(codes) != 1 || codes[0] != float64(c.code) {
			t.Errorf("%+v: %d %v", c.e, r.status, out)
			continue
		}
		if !strings.HasPrefix(desc, "AADSTS"+strconv.Itoa(c.code)+": ") || len(desc) < 60 || !strings.Contains(desc, "\r\nTrace ID: ") ||
			!strings.Contains(desc, "\r\nCorrelation ID: ") || !strings.Contains(desc, "\r\nTimestamp: ") {
			t.Errorf("%d: error_description %q", c.code, desc)
		}
		if out["error_uri"] != "https://login.microsoftonline.com/error?code="+strconv.Itoa(c.code) || !hasKeys(out, "timestamp", "trace_id", "correlation_id") ||
			!strings.Contains(desc, out["trace_id"].(string)) || !strings.Contains(desc, out["correlation_id"].(string)) {
			t.Errorf("%d: body %v", c.code, out)
		}
	}
	// Times and clearing.
	s.SetTokenError(TokenError{Code: 70000, Times: 1})
	if r := tokenRaw(t, s, refreshForm(s)); r.status != 400 {
		t.Errorf("Times 1: first grant %d", r.status)
	}
	if r := tokenRaw(t, s, refreshForm(s)); r.status != 200 {
		t.Errorf("Times 1: second grant %d %s", r.status, r.body)
	}
	s.SetTokenError(TokenError{Canned: HTMLPage(503)})
	if r := tokenRaw(t, s, refreshForm(s)); r.status != 503 || !strings.Contains(r.body, "<html") {
		t.Errorf("canned token answer: %d %q", r.status, r.body)
	}
	s.SetTokenError(TokenError{})
	if r := tokenRaw(t, s, refreshForm(s)); r.status != 200 {
		t.Errorf("cleared: %d %s", r.status, r.body)
	}
	s.SetTokenFault(true)
	if r := tokenRaw(t, s, refreshForm(s)); r.status != 400 || r.json(t)["error"] != "invalid_grant" || r.json(t)["error_codes"].([]any)[0] != 70008.0 {
		t.Errorf("SetTokenFault(true): %d %s", r.status, r.body)
	}
	s.SetTokenFault(false)
	before := s.Calls(OpToken)
	// The built-in checks use the identity platform's codes.
	f := refreshForm(s)
	f.Set("client_secret", "wrong")
	if r := tokenRaw(t, s, f); r.status != 401 || r.json(t)["error"] != "invalid_client" || r.json(t)["error_codes"].([]any)[0] != 7000215.0 {
		t.Errorf("wrong secret: %d %s", r.status, r.body)
	}
	f = refreshForm(s)
	f.Set("client_id", "someone-else")
	if r := tokenRaw(t, s, f); r.status != 401 || r.json(t)["error"] != "invalid_client" || r.json(t)["error_codes"].([]any)[0] != 700016.0 {
		t.Errorf("unknown client: %d %s", r.status, r.body)
	}
	if got := s.Calls(OpToken) - before; got != 2 {
		t.Errorf("token calls counted %d, want 2", got)
	}
	pub := NewServer(nil, WithPublicClient())
	t.Cleanup(pub.Close)
	f = refreshForm(pub)
	f.Set("client_secret", "x")
	if r := tokenRaw(t, pub, f); r.status != 401 || r.json(t)["error"] != "invalid_client" || r.json(t)["error_codes"].([]any)[0] != 700025.0 {
		t.Errorf("public client with secret: %d %s", r.status, r.body)
	}
	// A redeemed authorization code answers 54005.
	code := s.IssueAuthCode()
	ac := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"http://localhost/cb"}, "client_id": {s.ClientID()},
		"client_secret": {s.ClientSecret()}, "scope": {"https://ads.microsoft.com/msads.manage offline_access"}}
	if r := tokenRaw(t, s, ac); r.status != 200 {
		t.Fatalf("auth code: %d %s", r.status, r.body)
	}
	if r := tokenRaw(t, s, ac); r.status != 400 || r.json(t)["error_codes"].([]any)[0] != 54005.0 {
		t.Errorf("reused auth code: %d %s", r.status, r.body)
	}
}

func TestPrincipalAndCustomerVisibility(t *testing.T) {
	t.Parallel()
	ds := DemoDataset()
	s, tok := newSim(t, ds)
	id, name := s.Principal()
	if id != DemoPrincipal || name == "" {
		t.Fatalf("Principal() = %d %q", id, name)
	}
	for _, body := range []string{`{"UserId":null}`, `{}`} {
		st, out := post(t, s, "User/Query", tok, body, nil)
		if st != 200 || out["User"].(map[string]any)["Id"] != itoa2(id) {
			t.Fatalf("GetUser %s: %d %v", body, st, out)
		}
		var custs []int64
		for _, r := range out["CustomerRoles"].([]any) {
			c, _ := strconv.ParseInt(r.(map[string]any)["CustomerId"].(string), 10, 64)
			custs = append(custs, c)
		}
		slices.Sort(custs)
		if want := slices.Sorted(slices.Values(ds.CustomerIDs())); !slices.Equal(custs, want) {
			t.Errorf("principal's roles in %v, want every customer %v", custs, want)
		}
	}
	// Generated data sets: the first user, as before.
	g := GenerateAt(14, 5, 3, time.Now())
	gs, gtok := newSim(t, g)
	if gid, _ := gs.Principal(); gid != g.Users[0].ID {
		t.Errorf("generated principal %d, want the first user %d", gid, g.Users[0].ID)
	}
	if _, out := post(t, gs, "User/Query", gtok, `{"UserId":null}`, nil); out["User"].(map[string]any)["Id"] != itoa2(g.Users[0].ID) {
		t.Errorf("GetUser null: %v", out)
	}

	g2 := GenerateAt(14, 5, 3, time.Now())
	g2.GrantPrincipalEverywhere(msads.RoleSuperAdmin)
	gs2, gtok2 := newSim(t, g2)
	if _, out := post(t, gs2, "User/Query", gtok2, `{}`, nil); len(out["CustomerRoles"].([]any)) < 5 {
		t.Errorf("GrantPrincipalEverywhere: roles %v", out["CustomerRoles"])
	}
	for _, c := range g2.CustomerIDs() {
		if !slices.Contains(g2.ListedUserIDs(c), g2.Users[0].ID) {
			t.Errorf("principal not listed by %d", c)
		}
	}

	customers := func(topN int) []string {
		st, out := post(t, gs, "CustomersInfo/Query", gtok, `{"CustomerNameFilter":"","TopN":`+strconv.Itoa(topN)+`}`, nil)
		if st != 200 {
			t.Fatalf("GetCustomersInfo: %d %v", st, out)
		}
		var ids []string
		for _, c := range out["CustomersInfo"].([]any) {
			ids = append(ids, c.(map[string]any)["Id"].(string))
		}
		return ids
	}
	all := g.CustomerIDs()
	if got := customers(2); len(got) != 2 {
		t.Errorf("TopN 2: %v", got)
	}
	if got := customers(100); len(got) != 5 {
		t.Errorf("TopN 100: %v", got)
	}
	gs.HideFromCustomersInfo(all[1])
	if got := customers(100); len(got) != 4 || slices.Contains(got, itoa2(all[1])) {
		t.Errorf("hidden customer listed: %v", got)
	}
	if got := customers(2); len(got) != 2 || slices.Contains(got, itoa2(all[1])) {
		t.Errorf("TopN 2 with a hidden customer: %v, want a full page", got)
	}
	if st, out := post(t, gs, "UsersInfo/Query", gtok, `{"CustomerId":"`+itoa(all[1])+`"}`, nil); st != 200 {
		t.Errorf("hidden customer not reachable: %d %v", st, out)
	}
	gs.SetCustomersInfoCap(3)
	if got := customers(100); len(got) != 3 {
		t.Errorf("cap 3: %v", got)
	}
	if got := customers(1); len(got) != 1 {
		t.Errorf("cap 3, TopN 1: %v", got)
	}
	gs.SetCustomersInfoCap(0)
	gs.SetUnreachable(all[2])
	if got := customers(100); slices.Contains(got, itoa2(all[2])) || len(got) != 3 {
		t.Errorf("unreachable customer listed: %v", got)
	}
	if st, out := post(t, gs, "UsersInfo/Query", gtok, `{"CustomerId":"`+itoa(all[2])+`"}`, nil); st != 400 || code(out) != 106 {
		t.Errorf("unreachable customer: %d %v", st, out)
	}
	gs.AddCustomer(msads.Customer{ID: 123456789, Name: "Zeta"}, nil) // reindex keeps it unreachable
	if st, _ := post(t, gs, "UsersInfo/Query", gtok, `{"CustomerId":"`+itoa(all[2])+`"}`, nil); st != 400 {
		t.Errorf("unreachable customer reachable after AddCustomer: %d", st)
	}
	gs.SetReachable(all[2])
	if st, _ := post(t, gs, "UsersInfo/Query", gtok, `{"CustomerId":"`+itoa(all[2])+`"}`, nil); st != 200 {
		t.Errorf("SetReachable: %d", st)
	}
}

func itoa2(v int64) string { return strconv.FormatInt(v, 10) }

func TestServedValues(t *testing.T) {
	t.Parallel()
	ds := GenerateAt(15, 1, 1, time.Now())
	c0 := ds.CustomerIDs()[0]
	s, tok := newSim(t, ds)
	mod := time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC)
	statuses := []string{"Active", "Inactive", "Pending", "Deleted", "Suspended"}
	for id := int64(1); id <= 24; id++ {
		s.AddUser(c0, msads.User{ID: id, UserName: "u" + itoa(id), LifecycleStatus: statuses[id%5], LastModifiedTime: &mod},
			[]msads.Role{{RoleID: msads.RoleViewer, AccountIDs: [][]int64{nil, {}, {1, 2}}[id%3]}})
	}
	s.AddInvitation(msads.Invitation{ID: 17, CustomerID: c0, Email: "i@x", RoleID: 203, AccountIDs: []int64{}, ExpirationDate: &mod})
	for id := int64(1); id <= 24; id++ {
		st, out := getUser(t, s, tok, id, c0)
		if st != 200 {
			t.Fatalf("GetUser %d: %d %v", id, st, out)
		}
		u := out["User"].(map[string]any)
		lm := u["LastModifiedTime"].(string)
		frac := ""
		if n := id % 8; n > 0 {
			frac = "." + "123456789"[:n]
		}
		zone := []string{"Z", "+00:00", ""}[(id/8)%3]
		if want := "2025-03-04T05:06:07" + frac + zone; lm != want {
			t.Errorf("user %d LastModifiedTime %q, want %q", id, lm, want)
		}
		fcm, ok := u["ForwardCompatibilityMap"].([]any)
		if !ok || (id%5 == 0) != (len(fcm) == 1) {
			t.Errorf("user %d ForwardCompatibilityMap %v", id, u["ForwardCompatibilityMap"])
		} else if len(fcm) == 1 && (fcm[0].(map[string]any)["Key"] != "SomeFutureField" || fcm[0].(map[string]any)["Value"] != "x") {
			t.Errorf("user %d ForwardCompatibilityMap entry %v", id, fcm[0])
		}
		if u["UserLifeCycleStatus"] != statuses[id%5] {
			t.Errorf("user %d status %v", id, u["UserLifeCycleStatus"])
		}
		role := out["CustomerRoles"].([]any)[0].(map[string]any)
		acc, present := role["AccountIds"]
		switch id % 3 {
		case 0:
			if !present || acc != nil {
				t.Errorf("user %d AccountIds %v, want null", id, acc)
			}
		case 1:
			if a, ok := acc.([]any); !ok || len(a) != 0 {
				t.Errorf("user %d AccountIds %v, want []", id, acc)
			}
		case 2:
			if a, ok := acc.([]any); !ok || len(a) != 2 || a[0] != "1" {
				t.Errorf("user %d AccountIds %v, want [\"1\",\"2\"]", id, acc)
			}
		}
	}
	// [] survives Clone, Dataset(), SetRoles and AcceptInvitation.
	d := s.Dataset().Clone()
	for _, r := range d.Roles {
		if r.UserID <= 24 && (r.AccountIDs == nil) != (r.UserID%3 == 0) {
			t.Errorf("Clone changed AccountIDs of user %d: %#v", r.UserID, r.AccountIDs)
		}
	}
	s.SetRoles(1, []msads.Role{{CustomerID: c0, RoleID: msads.RoleViewer, AccountIDs: []int64{}}})
	uid := s.AcceptInvitation(17)
	for _, u := range []int64{1, uid} {
		_, out := getUser(t, s, tok, u, c0)
		if a, ok := out["CustomerRoles"].([]any)[0].(map[string]any)["AccountIds"].([]any); !ok || len(a) != 0 {
			t.Errorf("user %d: AccountIds %v, want []", u, out["CustomerRoles"])
		}
	}
	// Invitation dates follow the same rule; AccountIds [] stays [].
	s.AddInvitation(msads.Invitation{ID: 9, CustomerID: c0, Email: "j@x", RoleID: 203, AccountIDs: []int64{}, ExpirationDate: &mod})
	_, out := post(t, s, "UserInvitations/Search", tok, `{"Predicates":[{"Field":"CustomerId","Operator":"Equals","Value":"`+itoa(c0)+`"}]}`, nil)
	for _, e := range out["UserInvitations"].([]any) {
		inv := e.(map[string]any)
		if inv["Id"] == "9" {
			if inv["ExpirationDate"] != "2025-03-04T05:06:07.1+00:00" {
				t.Errorf("invitation date %v", inv["ExpirationDate"])
			}
			if a, ok := inv["AccountIds"].([]any); !ok || len(a) != 0 {
				t.Errorf("invitation AccountIds %v", inv["AccountIds"])
			}
		}
	}
	// Listing by status uses the stored status, unknown ones included.
	_, out = post(t, s, "UsersInfo/Query", tok, `{"CustomerId":"`+itoa(c0)+`","StatusFilter":"Suspended"}`, nil)
	if n := len(out["UsersInfo"].([]any)); n != 5 {
		t.Errorf("Suspended users listed: %d, want 5", n)
	}
}

var dateRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?(Z|\+00:00)?$`)

func TestDemoDatasetIsARealisticTenant(t *testing.T) {
	t.Parallel()
	ds := DemoDataset()
	again := DemoDataset()
	shape := func(d *Dataset) any {
		var users []int64
		for _, u := range d.Users {
			users = append(users, u.ID)
		}
		var roles []string
		for _, r := range d.Roles {
			roles = append(roles, strconv.FormatInt(r.UserID, 10)+"/"+strconv.FormatInt(r.CustomerID, 10)+"/"+strconv.Itoa(int(r.RoleID))+"/"+
				strconv.FormatBool(r.AccountIDs == nil)+strconv.Itoa(len(r.AccountIDs)))
		}
		return []any{d.CustomerIDs(), users, roles, d.UserFaults, d.StaleListings, d.Principal, len(d.Invitations)}
	}
	if !reflect.DeepEqual(shape(ds), shape(again)) {
		t.Fatal("DemoDataset is not deterministic")
	}
	// Generated data sets carry no faults and no stale listings.
	if g := GenerateAt(1, 3, 5, time.Now()); g.UserFaults != nil || g.StaleListings != nil || g.Principal != 0 {
		t.Error("Generate puts tenant traits into benchmark data")
	}
	cs := ds.CustomerIDs()
	s, tok := newSim(t, ds.Clone())

	// The users demo.go changes (the first two listed by the first
	// customer) are ordinary, readable ones.
	listed := ds.ListedUserIDs(cs[0])
	for _, id := range listed[:2] {
		if _, f := ds.UserFaults[id]; f || id >= DemoPrincipal {
			t.Errorf("demo changes an odd user %d", id)
		}
		if st, _ := getUser(t, s, tok, id, cs[0]); st != 200 {
			t.Errorf("demo user %d unreadable: %d", id, st)
		}
	}
	listedBy := func(c, id int64) bool { return slices.Contains(ds.ListedUserIDs(c), id) }
	want := []struct {
		id     int64
		cust   int64
		status int
		code   int
	}{
		{DemoUnreadable106, cs[1], 400, 106},
		{DemoUnreadable105, cs[2], 401, 105},
		{DemoDeletedUser, cs[0], 400, 1001},
	}
	for _, w := range want {
		if !listedBy(w.cust, w.id) {
			t.Errorf("user %d not listed by %d", w.id, w.cust)
		}
		if st, out := getUser(t, s, tok, w.id, w.cust); st != w.status {
			t.Errorf("user %d: %d %v", w.id, st, out)
		} else if c, _ := firstErr(t, out); c != w.code {
			t.Errorf("user %d: code %d, want %d", w.id, c, w.code)
		}
	}
	if !listedBy(cs[0], DemoNullUser) {
		t.Error("null user not listed")
	}
	if st, out := getUser(t, s, tok, DemoNullUser, cs[0]); st != 200 || out["User"] != nil {
		t.Errorf("null user: %d %v", st, out)
	}
	for id, status := range map[int64]string{DemoInactiveUser: "Inactive", DemoPendingUser: "Pending"} {
		if _, out := getUser(t, s, tok, id, 0); out["User"].(map[string]any)["UserLifeCycleStatus"] != status {
			t.Errorf("user %d: %v", id, out)
		}
	}
	_, out := getUser(t, s, tok, DemoTwoCustomers, cs[0])
	roles := out["CustomerRoles"].([]any)
	if len(roles) != 2 {
		t.Errorf("two-customer user roles: %v", roles)
	}
	sawEmpty := false
	for _, r := range roles {
		if a, ok := r.(map[string]any)["AccountIds"].([]any); ok && len(a) == 0 {
			sawEmpty = true
		}
	}
	if !sawEmpty {
		t.Errorf("no AccountIds [] role: %v", roles)
	}
	_, out = getUser(t, s, tok, DemoNullAccounts, cs[2])
	if r := out["CustomerRoles"].([]any)[0].(map[string]any); r["RoleId"] != float64(msads.RoleAdvertiserCampaignManager) || r["AccountIds"] != nil {
		t.Errorf("account-scoped role with null AccountIds: %v", r)
	}
	// Every date served has one of the documented forms.
	if lm, _ := out["User"].(map[string]any)["LastModifiedTime"].(string); !dateRE.MatchString(lm) {
		t.Errorf("date %q", lm)
	}
}

// credToken redeems c's refresh token for an access token; it returns the
// token endpoint's status and the access token.
func credToken(t *testing.T, s *Server, clientID, secret, refresh string) (int, string) {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {clientID},
		"client_secret": {secret}, "scope": {"https://ads.microsoft.com/msads.manage offline_access"}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.TokenURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tr)
	return resp.StatusCode, tr.AccessToken
}

func TestSeveralCredentials(t *testing.T) {
	t.Parallel()
	ds := GenerateAt(17, 3, 4, time.Now())
	c1, c2, c3 := ds.CustomerIDs()[0], ds.CustomerIDs()[1], ds.CustomerIDs()[2]
	s := NewServer(ds.Clone())
	t.Cleanup(s.Close)
	// A user with roles in all three customers; the second credential's
	// principal holds a role in c2 and c3, which it reaches.
	const shared, principal = 900001, 900002
	s.AddUser(c1, msads.User{ID: shared, UserName: "shared"}, []msads.Role{
		{CustomerID: c1, RoleID: msads.RoleViewer}, {CustomerID: c2, RoleID: msads.RoleStandardUser}, {CustomerID: c3, RoleID: msads.RoleSuperAdmin}})
	s.AddUser(c2, msads.User{ID: principal, UserName: "second"}, []msads.Role{
		{CustomerID: c2, RoleID: msads.RoleSuperAdmin}, {CustomerID: c3, RoleID: msads.RoleSuperAdmin}})
	cred := s.AddCredential(principal, []int64{c2, c3})
	if cred.DeveloperToken() == s.DeveloperToken() || cred.ClientID() == s.ClientID() || cred.ClientSecret() == s.ClientSecret() ||
		cred.RefreshToken() == s.RefreshToken() || cred.Principal() != principal {
		t.Fatal("the added credential shares the default one's secrets or principal")
	}
	// Refresh tokens are bound to their client, and secrets are checked per client.
	if st, _ := credToken(t, s, cred.ClientID(), cred.ClientSecret(), s.RefreshToken()); st != http.StatusBadRequest {
		t.Errorf("the default credential's refresh token with the second client: status %d, want 400", st)
	}
	if st, _ := credToken(t, s, cred.ClientID(), s.ClientSecret(), cred.RefreshToken()); st != http.StatusUnauthorized {
		t.Errorf("the second client with the default secret: status %d, want 401", st)
	}
	st, tok2 := credToken(t, s, cred.ClientID(), cred.ClientSecret(), cred.RefreshToken())
	if st != http.StatusOK || tok2 == "" {
		t.Fatalf("second credential's token: status %d", st)
	}
	tok1 := accessToken(t, s)

	call := func(tok, dev, path, body string, hdr map[string]string) (int, map[string]any) {
		t.Helper()
		h := map[string]string{"DeveloperToken": dev}
		for k, v := range hdr {
			h[k] = v
		}
		return post(t, s, path, tok, body, h)
	}
	dev2 := cred.DeveloperToken()
	// GetCustomersInfo lists only the credential's customers.
	customers := func(tok, dev string) []string {
		st, out := call(tok, dev, "CustomersInfo/Query", `{"TopN":100}`, nil)
		if st != 200 {
			t.Fatalf("GetCustomersInfo: %d %v", st, out)
		}
		var ids []string
		for _, c := range out["CustomersInfo"].([]any) {
			ids = append(ids, c.(map[string]any)["Id"].(string))
		}
		slices.Sort(ids)
		return ids
	}
	if got, want := customers(tok2, dev2), []string{itoa(c2), itoa(c3)}; !slices.Equal(got, want) {
		t.Errorf("second credential's customers %v, want %v", got, want)
	}
	if got := customers(tok1, s.DeveloperToken()); len(got) != 3 {
		t.Errorf("default credential's customers %v, want all 3", got)
	}
	// Calls for a customer it does not reach answer 106.
	if st, out := call(tok2, dev2, "UsersInfo/Query", `{"CustomerId":"`+itoa(c1)+`"}`, nil); st != 400 || !strings.Contains(jsonString(out), "106") {
		t.Errorf("GetUsersInfo of an unreached customer: %d %v, want 400 code 106", st, out)
	}
	if st, _ := call(tok2, dev2, "UsersInfo/Query", `{"CustomerId":"`+itoa(c2)+`"}`, nil); st != 200 {
		t.Errorf("GetUsersInfo of a reached customer: %d", st)
	}
	if st, _ := call(tok2, dev2, "UserInvitations/Search", `{"Predicates":[{"Field":"CustomerId","Operator":"Equals","Value":"`+itoa(c1)+`"}]}`, nil); st != 400 {
		t.Errorf("SearchUserInvitations of an unreached customer: %d, want 400", st)
	}
	if st, _ := call(tok2, dev2, "User/Query", `{"UserId":"`+itoa(shared)+`"}`, map[string]string{"CustomerId": itoa(c1)}); st != 400 {
		t.Errorf("GetUser in an unreached customer's context: %d, want 400", st)
	}
	// GetUser returns only the roles in the credential's customers.
	roles := func(tok, dev, user string) []string {
		st, out := call(tok, dev, "User/Query", `{"UserId":`+user+`}`, nil)
		if st != 200 {
			t.Fatalf("GetUser %s: %d %v", user, st, out)
		}
		var got []string
		for _, r := range out["CustomerRoles"].([]any) {
			got = append(got, r.(map[string]any)["CustomerId"].(string))
		}
		slices.Sort(got)
		return got
	}
	if got, want := roles(tok2, dev2, `"`+itoa(shared)+`"`), []string{itoa(c2), itoa(c3)}; !slices.Equal(got, want) {
		t.Errorf("second credential sees the shared user's roles in %v, want %v", got, want)
	}
	if got := roles(tok1, s.DeveloperToken(), `"`+itoa(shared)+`"`); len(got) != 3 {
		t.Errorf("default credential sees the shared user's roles in %v, want all 3", got)
	}
	// Each credential's signed-in user.
	st, out := call(tok2, dev2, "User/Query", `{"UserId":null}`, nil)
	if st != 200 || out["User"].(map[string]any)["Id"] != itoa(principal) {
		t.Errorf("second credential's principal: %d %v", st, out["User"])
	}
	defID, _ := s.Principal()
	st, out = call(tok1, s.DeveloperToken(), "User/Query", `{"UserId":null}`, nil)
	if st != 200 || out["User"].(map[string]any)["Id"] != itoa(defID) {
		t.Errorf("default credential's principal: %d %v", st, out["User"])
	}
	// An unknown developer token is refused.
	if st, _ := call(tok2, "DEVTOKEN-unknown", "CustomersInfo/Query", `{"TopN":10}`, nil); st != http.StatusUnauthorized {
		t.Errorf("unknown developer token: %d, want 401", st)
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// The service never hands out an id twice: an invitation accepted (and so
// gone) does not give its id to the next one, nor a deleted user to the
// next new user.
func TestIDsAreNeverReused(t *testing.T) {
	t.Parallel()
	s := NewServer(Generate(7, 1, 3))
	t.Cleanup(s.Close)
	cust := s.Dataset().CustomerIDs()[0]
	first := s.AddInvitation(msads.Invitation{CustomerID: cust, Email: "a@example.com", RoleID: msads.RoleViewer})
	user := s.AcceptInvitation(first)
	if user == 0 {
		t.Fatal("AcceptInvitation found no invitation")
	}
	if second := s.AddInvitation(msads.Invitation{CustomerID: cust, Email: "b@example.com", RoleID: msads.RoleViewer}); second == first {
		t.Errorf("invitation id %d reused", first)
	}
	s.RemoveUser(cust, user)
	third := s.AddInvitation(msads.Invitation{CustomerID: cust, Email: "c@example.com", RoleID: msads.RoleViewer})
	if again := s.AcceptInvitation(third); again == user {
		t.Errorf("user id %d reused", user)
	}
}

// SearchClientLinks as the reference has it (searchclientlinks.md REST,
// predicate.md, paging.md, clientlink.md): the ClientLink elements and no
// other, ids as strings; predicate fields, operators and combinations,
// PageInfo Size 1–100 and a string Value enforced with code 3030 or 201;
// customer links searched by a Super Admin only (106 otherwise, an
// Aggregator too).
func TestSearchClientLinksFidelity(t *testing.T) {
	t.Parallel()
	ds := DemoDataset()
	s := NewServer(ds)
	t.Cleanup(s.Close)
	tok := accessToken(t, s)
	c0 := ds.Customers[0].ID
	search := func(preds string, paging string) (int, map[string]any) {
		return post(t, s, "ClientLinks/Search", tok, `{"Predicates":`+preds+`,"Ordering":null,"PageInfo":`+paging+`}`,
			map[string]string{"CustomerId": fmt.Sprint(c0)})
	}
	byCustomer := fmt.Sprintf(`[{"Field":"ClientCustomerId","Operator":"Equals","Value":"%d"}]`, c0)
	st, out := search(byCustomer, `{"Index":0,"Size":100}`)
	list, _ := out["ClientLinks"].([]any)
	if st != 200 || len(list) == 0 {
		t.Fatalf("ClientCustomerId search: %d %v", st, out)
	}
	want := []string{"ClientEntityId", "ClientEntityName", "ClientEntityNumber", "CustomerLinkPermission", "ForwardCompatibilityMap",
		"InviterEmail", "InviterName", "InviterPhone", "IsBillToClient", "LastModifiedByUserId", "LastModifiedDateTime",
		"ManagingCustomerId", "ManagingCustomerName", "ManagingCustomerNumber", "Name", "Note", "StartDate", "Status",
		"SuppressNotification", "Timestamp", "Type"}
	for _, e := range list {
		l := e.(map[string]any)
		keys := slices.Sorted(maps.Keys(l))
		if !slices.Equal(keys, want) {
			t.Errorf("ClientLink elements %v, want the reference's %v", keys, want)
		}
		for _, id := range []string{"ClientEntityId", "ManagingCustomerId"} {
			if _, ok := l[id].(string); !ok {
				t.Errorf("%s = %#v, want a string (a long in REST JSON)", id, l[id])
			}
		}
	}
	for _, bad := range []struct{ preds, paging string }{
		{`[{"Field":"CustomerId","Operator":"Equals","Value":"150001753"}]`, `{"Index":0,"Size":10}`},                     // unknown field
		{`[{"Field":"DirectManagingCustomerId","Operator":"In","Value":"150001753,150002071"}]`, `{"Index":0,"Size":10}`}, // In not allowed
		{`[{"Field":"ClientCustomerId","Operator":"Contains","Value":"1500"}]`, `{"Index":0,"Size":10}`},                  // operator
		{`[{"Field":"ClientCustomerId","Operator":"Equals","Value":150001753}]`, `{"Index":0,"Size":10}`},                 // Value not a string
		{`[{"Field":"ClientCustomerId","Operator":"Equals","Value":"150001753"},{"Field":"ClientAccountId","Operator":"Equals","Value":"180000100"}]`, `{"Index":0,"Size":10}`},
		{`[{"Field":"DirectManagingCustomerId","Operator":"Equals","Value":"150001753"},{"Field":"ManagingCustomerId","Operator":"Equals","Value":"150001753"}]`, `{"Index":0,"Size":10}`},
		{`[]`, `{"Index":0,"Size":10}`}, // no predicate
		{byCustomer, `{"Index":0,"Size":101}`},
		{byCustomer, `{"Index":0}`}, // Size 0
		{byCustomer, `null`},
		{`[{"Field":"ClientAccountId","Operator":"In","Value":"1,2,3,4,5,6,7,8,9,10,11"}]`, `{"Index":0,"Size":10}`}, // In > 10 values
	} {
		if st, out := search(bad.preds, bad.paging); st != 400 {
			t.Errorf("%s %s: HTTP %d %v, want 400", bad.preds, bad.paging, st, out)
		}
	}

	// An Aggregator who is not Super Admin in the customer: 106 for its
	// customer links.
	s.SetRoles(ds.PrincipalID(), []msads.Role{{CustomerID: c0, RoleID: msads.RoleAggregator}})
	if st, out := search(byCustomer, `{"Index":0,"Size":100}`); st != 400 || !strings.Contains(fmt.Sprint(out), "106") {
		t.Errorf("Aggregator only: HTTP %d %v, want 400 code 106", st, out)
	}
}

// The demo tenant serves a client link in every ClientLinkStatus of the
// reference, and both directions (links into the demo customers and links
// they hold as agencies).
func TestDemoLinksEveryStatusBothDirections(t *testing.T) {
	t.Parallel()
	ds := DemoDataset()
	statuses := map[string]bool{}
	into, from := 0, 0
	customers := ds.CustomerIDs()
	for _, l := range ds.Links {
		statuses[l.Status] = true
		if slices.Contains(customers, l.ManagingCustomerID) {
			from++
		} else {
			into++
		}
	}
	for _, st := range []string{"LinkPending", "LinkCanceled", "LinkExpired", "LinkAccepted", "LinkDeclined", "LinkInProgress", "Active",
		"LinkFailed", "UnlinkRequested", "UnlinkPending", "UnlinkCanceled", "UnlinkInProgress", "Inactive", "UnlinkFailed"} {
		if !statuses[st] {
			t.Errorf("no demo link in status %s", st)
		}
	}
	if into == 0 || from == 0 {
		t.Errorf("links into the demo customers %d, held by them %d: want both", into, from)
	}
}

// A Burst of 2 holds the first call until the second arrives; both are
// then answered.
func TestBurstHoldsCallsUntilAllArrive(t *testing.T) {
	t.Parallel()
	ds := Generate(5, 2, 3)
	s := NewServer(ds)
	t.Cleanup(s.Close)
	tok := accessToken(t, s)
	cid := ds.CustomerIDs()[0]
	s.SetFault(OpGetUsersInfo, Fault{Burst: 2})
	body := `{"CustomerId":"` + itoa(cid) + `","StatusFilter":null}`
	first := make(chan int, 1)
	go func() { // not post: t.Fatal belongs to the test's goroutine
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.APIURL()+"/CustomerManagement/v13/UsersInfo/Query", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("DeveloperToken", s.DeveloperToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	select {
	case st := <-first:
		t.Fatalf("the first call of a burst of 2 was answered (%d) before the second arrived", st)
	case <-time.After(100 * time.Millisecond):
	}
	if st, _ := post(t, s, "UsersInfo/Query", tok, body, nil); st != 200 {
		t.Errorf("second call: HTTP %d", st)
	}
	if st := <-first; st != 200 {
		t.Errorf("first call: HTTP %d", st)
	}
	// The burst is spent: the next call is not held.
	if st, _ := post(t, s, "UsersInfo/Query", tok, body, nil); st != 200 {
		t.Errorf("third call: HTTP %d", st)
	}
}
