package extract

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/retryafter"
)

func ptrTime(s string) *time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return &t
}

func TestDecodeUsersInfo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		want       []UserInfo
		wantErr    bool
	}{
		{"ids as strings", `{"UsersInfo":[{"Id":"80123456","UserName":"alice@contoso.com"}]}`, []UserInfo{{80123456, "alice@contoso.com"}}, false},
		{"ids as numbers", `{"UsersInfo":[{"Id":80123456,"UserName":"a"},{"Id":9007199254740993,"UserName":null}]}`, []UserInfo{{80123456, "a"}, {9007199254740993, ""}}, false},
		{"null list", `{"UsersInfo":null}`, []UserInfo{}, false},
		{"null entries skipped, unknown fields ignored", `{"UsersInfo":[null,{"Id":"1","UserName":"x","Extra":{"a":[1]}}],"More":1}`, []UserInfo{{1, "x"}}, false},
		{"lowercase keys", `{"usersInfo":[{"id":"5","userName":"y"}]}`, []UserInfo{{5, "y"}}, false},
		{"missing id", `{"UsersInfo":[{"Id":null,"UserName":"x"}]}`, nil, true},
		{"bad id", `{"UsersInfo":[{"Id":"12a","UserName":"x"}]}`, nil, true},
		{"id as object", `{"UsersInfo":[{"Id":{},"UserName":"x"}]}`, nil, true},
		{"not an object", `[]`, nil, true},
		{"null body", `null`, nil, true},
		{"empty body", ``, nil, true},
		{"truncated", `{"UsersInfo":[{"Id":"8`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeUsersInfo([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

const getUserFixture = `{"User": {"ContactInfo": {"Address": {"City": "Redmond", "CountryCode": "US", "Id": "555", "Line1": null},
    "ContactByPhone": false, "ContactByPostalMail": false, "Email": "alice@contoso.com",
    "EmailFormat": "Html", "Id": "777", "Phone1": "4255550100", "Mobile": null},
  "CustomerId": "150123456", "ForwardCompatibilityMap": [], "Id": "80123456", "JobTitle": null,
  "LastModifiedByUserId": "80123456", "LastModifiedTime": "2025-03-04T05:06:07.123",
  "Lcid": "EnglishUS", "Name": {"FirstName": "Alice", "LastName": "Smith", "MiddleInitial": null},
  "Password": null, "SecretAnswer": null, "SecretQuestion": "None", "TimeStamp": "AAAAAAFg9xk=",
  "UserLifeCycleStatus": "Active", "UserName": "alice@contoso.com"},
 "CustomerRoles": [{"AccountIds": ["180000001"], "CustomerId": "150123456",
   "CustomerLinkPermission": null, "LinkedAccountIds": null, "RoleId": 16},
   {"AccountIds": null, "CustomerId": 150999999, "CustomerLinkPermission": "Standard", "LinkedAccountIds": [180000002, "180000003"], "RoleId": "41"}]}`

func TestDecodeUser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		body      string
		wantUser  msads.User
		wantRoles []msads.Role
		wantErr   bool
	}{
		{
			name: "documented shape",
			body: getUserFixture,
			wantUser: msads.User{ID: 80123456, HomeCustomerID: 150123456, UserName: "alice@contoso.com", Email: "alice@contoso.com",
				FirstName: "Alice", LastName: "Smith", Lcid: "EnglishUS", LifecycleStatus: "Active",
				LastModifiedTime: ptrTime("2025-03-04T05:06:07.123Z")},
			wantRoles: []msads.Role{
				{UserID: 80123456, CustomerID: 150123456, RoleID: 16, AccountIDs: []int64{180000001}},
				{UserID: 80123456, CustomerID: 150999999, RoleID: 41, LinkedAccountIDs: []int64{180000002, 180000003}, CustomerLinkPermission: "Standard"},
			},
		},
		{
			name: "nulls everywhere, numeric ids, zoned date",
			body: `{"User":{"ContactInfo":null,"CustomerId":150,"Id":81,"JobTitle":"CFO","LastModifiedTime":"2025-03-04T05:06:07+02:00",
				"Lcid":null,"Name":null,"UserLifeCycleStatus":null,"UserName":"bob"},"CustomerRoles":null}`,
			wantUser:  msads.User{ID: 81, HomeCustomerID: 150, UserName: "bob", JobTitle: "CFO", LastModifiedTime: ptrTime("2025-03-04T03:06:07Z")},
			wantRoles: []msads.Role{},
		},
		{
			name: "date with Z; [] and null account lists kept apart",
			body: `{"User":{"Id":"82","CustomerId":"1","LastModifiedTime":"2025-03-04T05:06:07Z","UserName":"c"},
				"CustomerRoles":[{"AccountIds":[],"CustomerId":"1","RoleId":203},{"AccountIds":null,"CustomerId":"2","RoleId":41}]}`,
			wantUser:  msads.User{ID: 82, HomeCustomerID: 1, UserName: "c", LastModifiedTime: ptrTime("2025-03-04T05:06:07Z")},
			wantRoles: []msads.Role{{UserID: 82, CustomerID: 1, RoleID: 203, AccountIDs: []int64{}, LinkedAccountIDs: nil}, {UserID: 82, CustomerID: 2, RoleID: 41}},
		},
		{
			name:      "enum as number, long fraction",
			body:      `{"User":{"Id":"83","CustomerId":"1","LastModifiedTime":"2025-03-04T05:06:07.1234567","Lcid":1033,"UserName":"d"},"CustomerRoles":[]}`,
			wantUser:  msads.User{ID: 83, HomeCustomerID: 1, UserName: "d", Lcid: "1033", LastModifiedTime: ptrTime("2025-03-04T05:06:07.1234567Z")},
			wantRoles: []msads.Role{},
		},
		{name: "no user", body: `{"User":null,"CustomerRoles":[]}`, wantErr: true},
		{name: "bad date", body: `{"User":{"Id":"1","LastModifiedTime":"yesterday"}}`, wantErr: true},
		{name: "role id too large", body: `{"User":{"Id":"1"},"CustomerRoles":[{"CustomerId":"1","RoleId":99999999999}]}`, wantErr: true},
		{name: "role without customer", body: `{"User":{"Id":"1"},"CustomerRoles":[{"CustomerId":null,"RoleId":41}]}`, wantErr: true},
		{name: "account ids not a list", body: `{"User":{"Id":"1"},"CustomerRoles":[{"CustomerId":"1","RoleId":41,"AccountIds":"1,2"}]}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, roles, err := decodeUser([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if !reflect.DeepEqual(u, tt.wantUser) {
				t.Errorf("user = %+v\nwant   %+v", u, tt.wantUser)
			}
			if !reflect.DeepEqual(roles, tt.wantRoles) {
				t.Errorf("roles = %+v\nwant    %+v", roles, tt.wantRoles)
			}
		})
	}
}

func TestDecodeInvitations(t *testing.T) {
	t.Parallel()
	body := `{"UserInvitations": [{"AccountIds": null, "CustomerId": "150123456", "Email": "bob@contoso.com",
   "ExpirationDate": "2025-04-03T10:00:00", "FirstName": "Bob", "Id": "9001", "LastName": "Jones",
   "Lcid": "EnglishUS", "RoleId": 203},
   {"AccountIds": ["1", 2], "CustomerId": 150123456, "Email": "c@x", "ExpirationDate": "2025-04-03T10:00:00.5Z",
   "FirstName": null, "Id": 9002, "LastName": null, "Lcid": null, "RoleId": 100},
   {"AccountIds": null, "CustomerId": null, "Email": "d@x", "ExpirationDate": null, "Id": "9003", "RoleId": 41}]}`
	got, err := decodeInvitations([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := []msads.Invitation{
		{ID: 9001, CustomerID: 150123456, Email: "bob@contoso.com", FirstName: "Bob", LastName: "Jones", RoleID: 203, Lcid: "EnglishUS", ExpirationDate: ptrTime("2025-04-03T10:00:00Z")},
		{ID: 9002, CustomerID: 150123456, Email: "c@x", RoleID: 100, AccountIDs: []int64{1, 2}, ExpirationDate: ptrTime("2025-04-03T10:00:00.5Z")},
		{ID: 9003, Email: "d@x", RoleID: 41},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{`{"UserInvitations":[{"Id":"x"}]}`, `{"UserInvitations":{}}`, `{"UserInvitations":[{"Id":"1","RoleId":"abc"}]}`} {
		if _, err := decodeInvitations([]byte(bad)); err == nil {
			t.Errorf("decodeInvitations(%s): want error", bad)
		}
	}
}

func TestDecodeCustomersAndAccounts(t *testing.T) {
	t.Parallel()
	cs, err := decodeCustomersInfo([]byte(`{"CustomersInfo":[{"Id":"150123456","Name":"Contoso"},{"Id":7,"Name":null}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := []msads.Customer{{ID: 150123456, Name: "Contoso"}, {ID: 7, Name: ""}}; !reflect.DeepEqual(cs, want) {
		t.Errorf("customers = %+v, want %+v", cs, want)
	}
	acc, err := decodeAccountsInfo([]byte(`{"AccountsInfo":[{"AccountLifeCycleStatus":"Active","Id":"180000001","Name":"Main","Number":"F1234ABC","PauseReason":null},
		{"AccountLifeCycleStatus":"Pause","Id":180000002,"Name":"B","Number":null,"PauseReason":2}]}`), 150)
	if err != nil {
		t.Fatal(err)
	}
	two := int32(2)
	want := []msads.Account{
		{ID: 180000001, CustomerID: 150, Name: "Main", Number: "F1234ABC", Status: "Active"},
		{ID: 180000002, CustomerID: 150, Name: "B", Status: "Pause", PauseReason: &two},
	}
	if !reflect.DeepEqual(acc, want) {
		t.Errorf("accounts = %+v, want %+v", acc, want)
	}
}

func TestDecodeFault(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body   string
		wantTracking string
		want         []ErrorDetail
		wantOK       bool
	}{
		{"AdApiFaultDetail", `{"TrackingId": "c9f5", "Type": "AdApiFaultDetail",
 "Errors": [{"Code": 117, "Detail": null, "ErrorCode": "CallRateExceeded", "Message": "You have exceeded"}]}`,
			"c9f5", []ErrorDetail{{117, "CallRateExceeded", "You have exceeded"}}, true},
		{"ApiFault", `{"TrackingId": "t2", "Type": "ApiFault",
 "OperationErrors": [{"Code": 3030, "Details": "x", "Message": "The Predicate passed in the search is invalid."}]}`,
			"t2", []ErrorDetail{{3030, "", "The Predicate passed in the search is invalid."}}, true},
		{"several errors, code as string", `{"Type":"AdApiFaultDetail","Errors":[{"Code":"106","ErrorCode":"UserIsNotAuthorized","Message":"m"},{"Code":0}]}`,
			"", []ErrorDetail{{106, "UserIsNotAuthorized", "m"}, {0, "", ""}}, true},
		{"wrapped ApplicationFault", `{"ApplicationFault":{"TrackingId":"w","Type":"AdApiFaultDetail","Errors":[{"Code":105}]}}`,
			"w", []ErrorDetail{{105, "", ""}}, true},
		{"html", `<html>Bad gateway</html>`, "", nil, false},
		{"empty object", `{}`, "", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, d, ok := decodeFault([]byte(tt.body))
			if tr != tt.wantTracking || !reflect.DeepEqual(d, tt.want) || ok != tt.wantOK {
				t.Errorf("decodeFault = %q, %+v, %v; want %q, %+v, %v", tr, d, ok, tt.wantTracking, tt.want, tt.wantOK)
			}
		})
	}
}

func TestParseTimeForms(t *testing.T) {
	t.Parallel()
	want := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, s := range []string{"2025-03-04T05:06:07", "2025-03-04T05:06:07Z", "2025-03-04T05:06:07.000", "2025-03-04T06:06:07+01:00",
		"2025-03-04T06:06:07+0100", "2025-03-04T05:06:07.0000000Z", "2025-03-04 05:06:07"} {
		got, err := parseTime(s)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("parseTime(%q) = %v, %v; want %v UTC", s, got, err, want)
		}
	}
	if _, err := parseTime("04/03/2025"); err == nil {
		t.Error("parseTime(04/03/2025): want error")
	}
}

// FuzzDecodeResponses feeds arbitrary bodies to every response decoder: none
// may panic, whatever the input.
func FuzzDecodeResponses(f *testing.F) {
	for _, s := range []string{
		getUserFixture,
		`{"UsersInfo":[{"Id":"80123456","UserName":"alice@contoso.com"}]}`,
		`{"UserInvitations":[{"AccountIds":["1"],"CustomerId":"1","ExpirationDate":"2025-04-03T10:00:00","Id":"9","RoleId":203}]}`,
		`{"CustomersInfo":[{"Id":"1","Name":"C"}]}`,
		`{"AccountsInfo":[{"Id":"1","PauseReason":4}]}`,
		`{"TrackingId":"t","Type":"AdApiFaultDetail","Errors":[{"Code":117}]}`,
		`{"ApplicationFault":{"OperationErrors":[{"Code":3030}]}}`,
		`{"Id": 1e3, "AccountIds": [1.5]}`,
		`{"ClientLinks":[{"Type":null,"ClientEntityId":"150","ManagingCustomerId":7,"IsBillToClient":"true","StartDate":"2025-03-04T05:06:07.1234567","Status":"Active"},null]}`,
		`{"ClientLinks":[{"ClientEntityId":"x"}]}`,
		strings.Repeat("[", 100),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeUsersInfo(b)
		_, _, _ = decodeUser(b)
		_, _ = decodeInvitations(b)
		_, _ = decodeCustomersInfo(b)
		_, _ = decodeAccountsInfo(b, 1)
		if links, n, err := decodeClientLinks(b); err == nil && len(links) > n {
			t.Fatalf("decodeClientLinks: %d links from %d entries", len(links), n)
		}
		_, _, _ = decodeFault(b)
		_, _ = parseTime(string(b))
		_, _ = retryafter.Parse(string(b), time.Now(), maxRetryAfter)
	})
}

// fuzzService serves whatever answer the fuzz input describes, for every
// API operation, behind a token endpoint that always grants.
var fuzzService struct {
	once   sync.Once
	srv    *httptest.Server
	mu     sync.Mutex
	status int
	ctype  string
	header string // Retry-After
	body   []byte
}

func fuzzClient(t *testing.T) *Client {
	fs := &fuzzService
	fs.once.Do(func() {
		mux := http.NewServeMux()
		mux.HandleFunc("/token", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"token_type":"Bearer","expires_in":3600,"access_token":"ACCESS-fuzz","refresh_token":"REFRESH-fuzz"}`)
		})
		mux.HandleFunc("/api/", func(w http.ResponseWriter, _ *http.Request) {
			fs.mu.Lock()
			status, ctype, ra, body := fs.status, fs.ctype, fs.header, fs.body
			fs.mu.Unlock()
			w.Header().Set("Content-Type", ctype)
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			w.WriteHeader(status)
			_, _ = w.Write(body)
		})
		fs.srv = httptest.NewServer(mux)
	})
	c, err := New(Config{APIURL: fs.srv.URL + "/api", TokenURL: fs.srv.URL + "/token", DeveloperToken: "DEVTOKEN-fuzz",
		ClientID: "client", ClientSecret: "SECRET-fuzz", RefreshToken: "SEED-fuzz", RequestsPerSecond: 1000,
		ThrottleWait: time.Millisecond, RequestTimeout: 2 * time.Second, RetryMaxElapsed: 20 * time.Millisecond,
		RetryInitialInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// FuzzClientResponses sends whole answers (status, content type,
// Retry-After, body) to every operation of the client: no panic; a failure
// is always a typed *APIError; a success needs a 2xx whose body holds the
// operation's result field (a body without it is never an empty list).
func FuzzClientResponses(f *testing.F) {
	for _, s := range []struct {
		op     uint8
		status uint16
		ctype  string
		ra     string
		body   string
	}{
		{0, 200, "application/json", "", `{"UsersInfo":[{"Id":"80123456","UserName":"alice@contoso.com"}]}`},
		{1, 200, "application/json", "", getUserFixture},
		{1, 200, "application/json", "", `{"User":null,"CustomerRoles":null}`},
		{2, 200, "application/json", "", `{"UserInvitations":null}`},
		{3, 200, "application/json", "", `{"CustomersInfo":[{"Id":"1","Name":"C"}]}`},
		{4, 200, "application/json", "", `{"AccountsInfo":[{"Id":"1","PauseReason":4,"AccountLifeCycleStatus":"Active"}]}`},
		{2, 200, "application/json", "", `{}`},
		{0, 200, "text/html", "", `<html><body>Service Unavailable</body></html>`},
		{0, 429, "application/json", "1", `{"TrackingId":"t","Type":"AdApiFaultDetail","Errors":[{"Code":117,"ErrorCode":"CallRateExceeded"}]}`},
		{1, 400, "application/json", "", `{"TrackingId":"t","Type":"AdApiFaultDetail","Errors":[{"Code":1001,"ErrorCode":"UserNotFound"}]}`},
		{2, 400, "application/json", "", `{"Type":"ApiFault","OperationErrors":[],"BatchErrors":[{"Code":4242,"Index":0}]}`},
		{3, 401, "application/json", "", `{"Type":"AdApiFaultDetail","Errors":[{"Code":105}]}`},
		{4, 503, "text/html", "Mon, 30 Nov 2026 12:00:09 GMT", `<html>503</html>`},
		{0, 504, "", "", ``},
		{1, 200, "application/json", "", `{"User":{"Id":"1","ForwardCompatibilityMap":[{"Key":"k","Value":"v"}],"LastModifiedTime":"2025-03-04T05:06:07.1234567+00:00"},"CustomerRoles":[{"CustomerId":"1","RoleId":41,"AccountIds":[]}]}`},
		{5, 200, "application/json", "", `{"ClientLinks":null}`},
		{5, 200, "application/json", "", `{"ClientLinks":[{"Type":"CustomerLink","ClientEntityId":"1","ManagingCustomerId":"2","CustomerLinkPermission":"Administrative","Status":"Active"},null,{"ClientEntityId":3,"ManagingCustomerId":2,"IsBillToClient":"false","Status":"SomethingNew"}]}`},
		{5, 200, "application/json", "", `{"ClientLinks":[` + strings.Repeat(`{"ClientEntityId":"1","ManagingCustomerId":"2"},`, 100) + `{"ClientEntityId":"1","ManagingCustomerId":"2"}]}`},
		{5, 200, "application/json", "", `{"ClientLinks":[` + strings.TrimSuffix(strings.Repeat(`null,`, 100), ",") + `]}`},
		{5, 400, "application/json", "", `{"Type":"AdApiFaultDetail","Errors":[{"Code":106,"ErrorCode":"UserIsNotAuthorized"}]}`},
	} {
		f.Add(s.op, s.status, s.ctype, s.ra, []byte(s.body))
	}
	fields := []string{"UsersInfo", "User", "UserInvitations", "CustomersInfo", "AccountsInfo", "ClientLinks"}
	f.Fuzz(func(t *testing.T, op uint8, status uint16, ctype, ra string, body []byte) {
		if status < 200 || status > 599 || len(body) > 1<<16 {
			return
		}
		if d, ok := retryafter.Parse(ra, time.Now(), maxRetryAfter); ok && d > 20*time.Millisecond {
			ra = "" // waiting out a long pause is not what is fuzzed here
		}
		fs := &fuzzService
		c := fuzzClient(t)
		fs.mu.Lock()
		fs.status, fs.ctype, fs.header, fs.body = int(status), ctype, ra, body
		fs.mu.Unlock()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		op %= uint8(len(fields))
		var err error
		switch op {
		case 0:
			_, err = c.GetUsersInfo(ctx, 1)
		case 1:
			_, _, err = c.GetUser(ctx, 1, 7)
		case 2:
			_, err = c.SearchUserInvitations(ctx, 1)
		case 3:
			_, err = c.GetCustomersInfo(ctx)
		case 4:
			_, err = c.GetAccountsInfo(ctx, 1)
		case 5:
			var links []msads.ClientLink
			links, err = c.SearchClientLinks(ctx, 1, linkPredicate("ClientCustomerId", "Equals", "1"))
			if err == nil && len(links) >= linksPageSize {
				// The service answers every page alike: a full page is
				// asked again and found repeated, never taken as all.
				t.Fatalf("SearchClientLinks: %d links from one repeated page accepted", len(links))
			}
		}
		if err == nil {
			if status < 200 || status > 299 {
				t.Fatalf("HTTP %d accepted as a success", status)
			}
			// encoding/json matches field names case-insensitively.
			if !bytes.Contains(bytes.ToLower(body), []byte(strings.ToLower(`"`+fields[op]+`"`))) && !bytes.Contains(body, []byte(`\u`)) {
				t.Fatalf("%s: a body without %q accepted: %q", fields[op], fields[op], body)
			}
			return
		}
		if asAPIError(err) == nil && !IsRunFatal(err) {
			t.Fatalf("untyped error %T: %v", err, err)
		}
		for _, secret := range []string{"SECRET-fuzz", "SEED-fuzz", "DEVTOKEN-fuzz", "ACCESS-fuzz", "REFRESH-fuzz"} {
			if strings.Contains(err.Error(), secret) && !bytes.Contains(body, []byte(secret)) {
				t.Fatalf("error shows a secret it was not sent back: %v", err)
			}
		}
	})
}

// FuzzTokenAnswer classifies any token endpoint answer: no panic, a
// transient or a fatal class, and never a known secret in the text.
func FuzzTokenAnswer(f *testing.F) {
	for _, s := range []string{
		`{"error":"invalid_grant","error_description":"AADSTS70008: expired","error_codes":[70008]}`,
		`{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret SECRET-fuzz provided."}`,
		`{"error":"temporarily_unavailable"}`,
		`<html>503</html>`, ``, `{"error":null}`, `{"error":"x","error_codes":"bad"}`,
	} {
		f.Add(uint16(400), []byte(s))
	}
	f.Fuzz(func(t *testing.T, status uint16, body []byte) {
		te := classifyTokenFailure(int(status), body, newRedactor("SECRET-fuzz", "DEVTOKEN-fuzz"))
		if te.Class != ClassTransient && !te.Fatal {
			t.Fatalf("neither transient nor fatal: %+v", te)
		}
		if strings.Contains(te.Error(), "SECRET-fuzz") {
			t.Fatalf("secret in %q", te.Error())
		}
	})
}
