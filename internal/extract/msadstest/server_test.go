package msadstest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
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
