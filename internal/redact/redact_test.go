package redact

import "testing"

func TestWhole(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, text, secret, want string
	}{
		{"alone", "token s3cretV4lue refused", "s3cretV4lue", "token [redacted] refused"},
		{"in a URL", "postgres://u:s3cretV4lue@h/db", "s3cretV4lue", "postgres://u:[redacted]@h/db"},
		{"quoted", `password="s3cretV4lue"`, "s3cretV4lue", `password="[redacted]"`},
		{"every time", "s3cretV4lue and s3cretV4lue", "s3cretV4lue", "[redacted] and [redacted]"},
		{"short secret left alone", "the server shutdown", "down", "the server shutdown"},
		{"7 chars left alone", "password1234 passwor", "passwor", "password1234 passwor"},
		{"inside a longer word", "the cancellation was cancelled", "cancella", "the cancellation was cancelled"},
		{"prefix of a longer token", "abcdefgh123 abcdefgh", "abcdefgh", "abcdefgh123 [redacted]"},
		{"suffix of a longer token", "xabcdefgh abcdefgh.", "abcdefgh", "xabcdefgh [redacted]."},
		{"symbol edges match anywhere", "a=-_-:!secret!:-_-b", "-_-:!secret!:-_-", "a=[redacted]b"},
		{"overlapping start", "aaaaaaaaa aaaaaaaa", "aaaaaaaa", "aaaaaaaaa [redacted]"},
		{"at both ends", "abcdefgh", "abcdefgh", "[redacted]"},
		{"unicode neighbours", "éabcdefgh abcdefgh", "abcdefgh", "éabcdefgh [redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Whole(tt.text, tt.secret, Mask); got != tt.want {
				t.Errorf("Whole(%q, %q) = %q, want %q", tt.text, tt.secret, got, tt.want)
			}
		})
	}
}

func TestSet(t *testing.T) {
	t.Parallel()
	var s Set
	s.Add("pw", "devtoken-123", "devtoken-123-long", "", "devtoken-123")
	got := s.Redact("a devtoken-123-long b devtoken-123 c pw password")
	if want := "a [redacted] b [redacted] c pw password"; got != want {
		t.Errorf("Redact = %q, want %q", got, want)
	}
	var nilSet *Set
	if nilSet.Redact("x") != "x" {
		t.Error("nil set changed the text")
	}
}
