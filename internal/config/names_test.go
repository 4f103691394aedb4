package config

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// The patterns the name checks replace (see names.go): each check must
// agree with its pattern on every ASCII string. (On non-ASCII input the
// domain pattern's (?i) also matches U+212A KELVIN SIGN for k and U+017F
// for s, which isDomain rejects, as DNS does.)
var (
	identPattern    = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	instancePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	guidPattern     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	domainPattern   = regexp.MustCompile(`^(?i)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
)

func TestNameChecksAgreeWithTheirPatterns(t *testing.T) {
	checks := []struct {
		name    string
		check   func(string) bool
		pattern *regexp.Regexp
	}{
		{"isIdent", isIdent, identPattern},
		{"isInstance", isInstance, instancePattern},
		{"isGUID", isGUID, guidPattern},
		{"isDomain", isDomain, domainPattern},
	}
	// Strings at the edges (lengths 62-64 and 127-129, labels of 61-64,
	// leading and trailing '-' and '.'), then random ones over an alphabet
	// of every class the patterns tell apart.
	inputs := []string{"", "a", "_", "0", "a0", "msads", "Msads", "a-b", "a.b", "contoso.com", "contoso.onmicrosoft.com",
		"-a.com", "a-.com", "a.c", "a.c0", "a..com", ".a.com", "a.com.", "xn--bcher-kva.example", "EXAMPLE.COM",
		"72f988bf-86f1-41af-91ab-2d7cd011db47", "72F988BF-86F1-41AF-91AB-2D7CD011DB47", "72f988bf86f1-41af-91ab-2d7cd011db47-",
		"72f988bf-86f1-41af-91ab-2d7cd011db4g", "72F988BF-86F1-41AF-91AB-2D7CD011DB4G", "pod-1.ns:9102", "-pod", "a\n", "a\x00b"}
	// GUIDs with one character replaced by each of a hex digit's
	// neighbours (g, G, '/', ':', '@', '`', '-') and each hyphen moved.
	const guid = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	for i := range len(guid) {
		for _, c := range "gG/:@`-0aA" {
			inputs = append(inputs, guid[:i]+string(c)+guid[i+1:])
		}
	}
	for _, n := range []int{61, 62, 63, 64, 127, 128, 129} {
		inputs = append(inputs, strings.Repeat("a", n), "_"+strings.Repeat("1", n-1), strings.Repeat("a", n)+".com",
			"a."+strings.Repeat("b", n), "x"+strings.Repeat("-", n-2)+"y.org")
	}
	const alphabet = "azAZ09_-.:gG/ "
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var b strings.Builder
		for range rng.IntN(40) {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		inputs = append(inputs, b.String())
	}
	for _, c := range checks {
		for _, in := range inputs {
			if got, want := c.check(in), c.pattern.MatchString(in); got != want {
				t.Errorf("%s(%q) = %v, its pattern says %v", c.name, in, got, want)
			}
		}
	}
	if !domainPattern.MatchString("\u212Aontoso.com") || isDomain("\u212Aontoso.com") {
		t.Error("the domain pattern accepts the Kelvin sign for k and isDomain does not: expected the one difference")
	}
}
