package extract

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestClassifyResponse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		codes  []int
		want   Class
	}{
		{"117 on 400", 400, []int{117}, ClassThrottled},
		{"117 on 429", 429, []int{117}, ClassThrottled},
		{"bare 429", 429, nil, ClassThrottled},
		{"code 0 on 500", 500, []int{0}, ClassTransient},
		{"833 on 500", 500, []int{833}, ClassTransient},
		{"code 0 on 400", 400, []int{0}, ClassTransient},
		{"bare 502", 502, nil, ClassTransient},
		{"503 empty fault", 503, nil, ClassTransient},
		{"109", 401, []int{109}, ClassAuth},
		{"bare 401", 401, nil, ClassAuth},
		{"105", 401, []int{105}, ClassAuth},
		{"106", 400, []int{106}, ClassPermanent},
		{"1001", 403, []int{1001}, ClassPermanent},
		{"3101", 401, []int{3101}, ClassPermanent},
		{"201", 400, []int{201}, ClassPermanent},
		{"202", 400, []int{202}, ClassPermanent},
		{"203", 400, []int{203}, ClassPermanent},
		{"permanent code on 500", 500, []int{106}, ClassPermanent},
		{"0 and 106 together", 500, []int{0, 106}, ClassPermanent},
		{"404 route", 404, nil, ClassPermanent},
		{"bare 400", 400, nil, ClassPermanent},
		{"unknown code", 400, []int{4242}, ClassPermanent},
	}
	for _, tt := range tests {
		if got := classifyResponse(tt.status, tt.codes); got != tt.want {
			t.Errorf("%s: classifyResponse(%d, %v) = %v, want %v", tt.name, tt.status, tt.codes, got, tt.want)
		}
	}
}

type fakeNetErr struct{}

func (fakeNetErr) Error() string   { return "connection reset" }
func (fakeNetErr) Timeout() bool   { return false }
func (fakeNetErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"api error throttled", &APIError{Op: "GetUser", Class: ClassThrottled}, ClassThrottled},
		{"wrapped api error", fmt.Errorf("x: %w", &APIError{Class: ClassAuth}), ClassAuth},
		{"reauth", fmt.Errorf("token: %w", ErrReauth), ClassPermanent},
		{"canceled", fmt.Errorf("GetUser: %w", context.Canceled), ClassPermanent},
		{"deadline", context.DeadlineExceeded, ClassPermanent},
		{"net error", &url.Error{Op: "Post", URL: "http://x", Err: fakeNetErr{}}, ClassTransient},
		{"http client timeout", &url.Error{Op: "Post", URL: "http://x", Err: context.DeadlineExceeded}, ClassTransient},
		{"canceled round trip", &url.Error{Op: "Post", URL: "http://x", Err: context.Canceled}, ClassPermanent},
		{"op error", &net.OpError{Op: "dial", Err: errors.New("refused")}, ClassTransient},
		{"unexpected eof", io.ErrUnexpectedEOF, ClassTransient},
		{"other", errors.New("boom"), ClassPermanent},
		{"nil", nil, ClassPermanent},
	}
	for _, tt := range tests {
		if got := Classify(tt.err); got != tt.want {
			t.Errorf("%s: Classify = %v, want %v", tt.name, got, tt.want)
		}
	}
	for c, s := range map[Class]string{ClassThrottled: "throttled", ClassTransient: "transient", ClassAuth: "unauthorized", ClassPermanent: "permanent"} {
		if c.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(c), c.String(), s)
		}
	}
}

// rawServer serves a token endpoint (always valid) and an API handler.
func rawServer(t *testing.T, api http.HandlerFunc) (*httptest.Server, Config) {
	t.Helper()
	var n atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"ACCESS-SECRET-%d","token_type":"Bearer","expires_in":3600,"refresh_token":"REFRESH-SECRET-%d"}`, i, i)
	})
	mux.HandleFunc("/api/", api)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, Config{
		APIURL: srv.URL + "/api", TokenURL: srv.URL + "/token",
		DeveloperToken: "DEVTOKEN-SECRET", ClientID: "client-id", ClientSecret: "CLIENT-SECRET-XYZ",
		RefreshToken: "SEED-REFRESH-SECRET", RequestsPerSecond: 1000, ThrottleWait: 10 * time.Millisecond,
		RequestTimeout: 5 * time.Second, RetryMaxElapsed: 150 * time.Millisecond, RetryInitialInterval: 5 * time.Millisecond,
	}
}

// echoFault answers a fault whose every text field echoes the request's
// secrets, as a hostile or buggy server might.
func echoFault(status, code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		echo := r.Header.Get("Authorization") + " " + r.Header.Get("DeveloperToken") + " CLIENT-SECRET-XYZ SEED-REFRESH-SECRET REFRESH-SECRET-1"
		w.Header().Set("TrackingId", "tid "+echo)
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"TrackingId":%q,"Type":"AdApiFaultDetail","Errors":[{"Code":%d,"ErrorCode":%q,"Message":%q}]}`, "tid "+echo, code, echo, "bad "+echo)
	}
}

func TestErrorsNeverContainSecrets(t *testing.T) {
	t.Parallel()
	secrets := []string{"ACCESS-SECRET", "REFRESH-SECRET", "DEVTOKEN-SECRET", "CLIENT-SECRET-XYZ", "SEED-REFRESH-SECRET"}
	hang := func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // lets the server notice the client leaving
		<-r.Context().Done()
	}
	tests := []struct {
		name  string
		api   http.HandlerFunc
		token func(w http.ResponseWriter, r *http.Request) // nil = valid token endpoint
		class Class
	}{
		{"throttled", echoFault(429, 117), nil, ClassThrottled},
		{"transient", echoFault(500, 0), nil, ClassTransient},
		{"token expired", echoFault(401, 109), nil, ClassAuth},
		{"permanent", echoFault(400, 106), nil, ClassPermanent},
		{"malformed 5xx", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(502)
			io.WriteString(w, "<html>"+r.Header.Get("Authorization")+"</html>")
		}, nil, ClassTransient},
		{"timeout", hang, nil, ClassTransient},
		{"reauth", echoFault(400, 106), func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm()
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"AADSTS70000: token %s secret %s"}`, r.PostForm.Get("refresh_token"), r.PostForm.Get("client_secret"))
		}, ClassPermanent},
		{"token endpoint other error", echoFault(400, 106), func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm()
			w.WriteHeader(401)
			fmt.Fprintf(w, `{"error":"invalid_client","error_description":"bad secret %s"}`, r.PostForm.Get("client_secret"))
		}, ClassPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, cfg := rawServer(t, tt.api)
			if tt.token != nil {
				cfg.TokenURL = srv.URL + "/badtoken"
				srv.Config.Handler.(*http.ServeMux).HandleFunc("/badtoken", tt.token)
			}
			if tt.name == "timeout" {
				cfg.RequestTimeout = 300 * time.Millisecond // the hung handler's answer
			}
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.GetUsersInfo(testCtx(t), 150123456)
			if err == nil {
				t.Fatal("want error")
			}
			if got := Classify(err); got != tt.class {
				t.Errorf("class = %v, want %v (err %v)", got, tt.class, err)
			}
			msg := err.Error()
			for _, s := range secrets {
				if strings.Contains(msg, s) {
					t.Errorf("error contains secret %q: %s", s, msg)
				}
			}
			if !strings.Contains(msg, "GetUsersInfo") || !strings.Contains(msg, "150123456") {
				t.Errorf("error does not name op and customer: %s", msg)
			}
			if tt.name == "reauth" && (!errors.Is(err, ErrReauth) || !strings.Contains(msg, "syncer auth")) {
				t.Errorf("reauth error not actionable: %s", msg)
			}
		})
	}
}
