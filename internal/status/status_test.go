package status

import "testing"

func TestFinal(t *testing.T) {
	t.Parallel()
	for _, s := range []Status{Succeeded, Partial, Failed, Canceled} {
		if !s.Final() {
			t.Errorf("%s is not final", s)
		}
	}
	for _, s := range []Status{Running, Abandoned, Locked, Skipped, "bogus"} {
		if s.Final() {
			t.Errorf("%s is final", s)
		}
	}
}
