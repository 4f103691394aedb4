package config

import (
	"strings"
	"testing"
)

func TestTenantAndRedirectURI(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte("microsoft_ads:\n  client_id: x\n"), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.MicrosoftAds; m.Tenant != "common" || m.RedirectURI != "http://localhost:8400/" || m.User != "" {
		t.Errorf("defaults: tenant %q, redirect_uri %q, user %q", m.Tenant, m.RedirectURI, m.User)
	}
	for _, tc := range []struct {
		yaml string
		err  string // "" = valid
	}{
		{"tenant: organizations", ""},
		{"tenant: consumers", ""},
		{"tenant: 0f3c2a1e-8b7d-4c6a-9e5f-1a2b3c4d5e6f", ""},
		{"tenant: contoso.onmicrosoft.com", ""},
		{"tenant: contoso", "microsoft_ads.tenant"},
		{"tenant: \"common/../x\"", "microsoft_ads.tenant"},
		{"redirect_uri: https://login.microsoftonline.com/common/oauth2/nativeclient", ""},
		{"redirect_uri: http://127.0.0.1:8400/callback", ""},
		{"redirect_uri: http://example.com/cb", "microsoft_ads.redirect_uri"},
		{"redirect_uri: localhost:8400", "microsoft_ads.redirect_uri"},
		{"user: alice@contoso.com", ""},
	} {
		_, err := Parse([]byte("microsoft_ads:\n  "+tc.yaml+"\n"), func(string) string { return "" })
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.yaml, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: err = %v, want one naming %s", tc.yaml, err, tc.err)
		}
	}
}
