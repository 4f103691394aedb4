package redact

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

type codeError struct{ code int }

func (e *codeError) Error() string { return fmt.Sprintf("code %d", e.code) }

func TestError(t *testing.T) {
	t.Parallel()
	inner := &codeError{7}
	err := fmt.Errorf("post https://hooks.example/T0/B1/secret: %w", inner)
	got := Error(err, URL("https://hooks.example/T0/B1/secret")...)
	if want := "post [redacted]: code 7"; got.Error() != want {
		t.Errorf("Error = %q, want %q", got, want)
	}
	var ce *codeError
	if !errors.As(got, &ce) || !errors.Is(got, inner) {
		t.Error("the chain is lost")
	}
	if same := Error(err, "absent"); same != err { //nolint:errorlint // the very same error is wanted
		t.Error("an error without secrets was wrapped")
	}
	if Error(nil, "x") != nil {
		t.Error("Error(nil) is not nil")
	}
	// Short secrets are replaced too: the caller knows they are secret.
	if got := Error(errors.New("path /abc here"), "/abc"); got.Error() != "path [redacted] here" {
		t.Errorf("short secret: %q", got)
	}
}

func TestSecretForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"password", Password("p@ss w/rd"), []string{"p@ss w/rd", "p%40ss+w%2Frd", "p@ss%20w%2Frd"}},
		{"no password", Password(""), nil},
		{"userinfo", Userinfo("https://bob:s3cret@push.example:9091"), []string{"bob:s3cret", "s3cret", "s3cret", "s3cret"}},
		{"userinfo without password", Userinfo("https://bob@push.example"), nil},
		{"no userinfo", Userinfo("http://push.example"), nil},
		{"url", URL("https://hooks.example/services/T0/B1?token=x"), []string{"https://hooks.example/services/T0/B1?token=x", "/services/T0/B1", "/services/T0/B1", "token=x"}},
		{"url without path", URL("https://hooks.example/"), []string{"https://hooks.example/"}},
		{"empty url", URL(""), nil},
	}
	for _, tt := range tests {
		if !slices.Equal(tt.got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestConnPasswords(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"host=h password=s3cret user=u", "host=h password=[redacted] user=u"},
		{"password = 'a b\\' c' dbname=x", "password = [redacted] dbname=x"},
		{"dial postgres://u:pw@h:5432/db failed", "dial postgres://u:[redacted]@h:5432/db failed"},
		{"nothing here", "nothing here"},
	}
	for _, tt := range tests {
		if got := ConnPasswords(tt.in); got != tt.want {
			t.Errorf("ConnPasswords(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
