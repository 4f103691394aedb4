package load

import (
	"errors"
	"strings"
	"testing"
)

// A row stored before migration 004 (keyed by the hash of the client id and
// the developer token) is used by the first run, moves under the signed-in
// user once known, and is found afterwards with another developer token.
func TestTokensLegacyRowMigrates(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{TokenKey: "correct horse"})
	ctx := t.Context()
	if err := b.store.TokenStore("cred:old-dev-token").Save(ctx, "rt-0"); err != nil { // as before 004
		t.Fatal(err)
	}
	ts := b.store.Tokens(TokenKey{Environment: "production", ClientID: "client-1", LegacyKey: "cred:old-dev-token"})
	if tok, err := ts.Load(ctx); err != nil || tok != "rt-0" {
		t.Fatalf("Load = %q, %v; want the legacy row's token", tok, err)
	}
	// The first refresh, before the user is known: saved where it came from.
	if err := ts.Save(ctx, "rt-1"); err != nil {
		t.Fatal(err)
	}
	equal(t, "before the user is known", b.strings(t, `SELECT credential_key, environment, client_id, user_id FROM oauth_tokens`),
		[]string{"cred:old-dev-token|production|client-1|NULL"})
	if err := ts.SetPrincipal(ctx, 42, "alice@contoso.com"); err != nil {
		t.Fatal(err)
	}
	equal(t, "after the user is known", b.strings(t, `SELECT credential_key, environment, client_id, user_id, user_name, kind FROM oauth_tokens`),
		[]string{"user:production:client-1:42|production|client-1|42|alice@contoso.com|aes-gcm"})
	if err := ts.Save(ctx, "rt-2"); err != nil {
		t.Fatal(err)
	}

	// The developer token is rotated: another legacy key, same sign-in.
	rotated := NewStore(b.pool, Options{Schema: b.schema, TokenKey: "correct horse"}).
		Tokens(TokenKey{Environment: "production", ClientID: "client-1", LegacyKey: "cred:new-dev-token"})
	if tok, err := rotated.Load(ctx); err != nil || tok != "rt-2" {
		t.Fatalf("after rotating the developer token: Load = %q, %v; want rt-2", tok, err)
	}
	if id, name := rotated.User(); id != 42 || name != "alice@contoso.com" {
		t.Errorf("User() = %d %q", id, name)
	}
	if err := rotated.Save(ctx, "rt-3"); err != nil {
		t.Fatal(err)
	}
	equal(t, "rows", b.strings(t, `SELECT credential_key FROM oauth_tokens`), []string{"user:production:client-1:42"})

	// Another environment or client id does not see it.
	for _, k := range []TokenKey{{Environment: "sandbox", ClientID: "client-1"}, {Environment: "production", ClientID: "client-2"}} {
		if tok, err := b.store.Tokens(k).Load(ctx); err != nil || tok != "" {
			t.Errorf("%+v: Load = %q, %v; want nothing", k, tok, err)
		}
	}
}

func TestTokensSeveralUsers(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := t.Context()
	key := TokenKey{Environment: "production", ClientID: "client-1", LegacyKey: "cred:x"}
	for _, u := range []struct {
		id   int64
		name string
	}{{1, "alice@contoso.com"}, {2, "bob@contoso.com"}} {
		ts := b.store.Tokens(key)
		if err := ts.SetPrincipal(ctx, u.id, u.name); err != nil {
			t.Fatal(err)
		}
		if err := ts.Save(ctx, "rt-of-"+u.name); err != nil {
			t.Fatal(err)
		}
	}
	_, err := b.store.Tokens(key).Load(ctx)
	if !errors.Is(err, ErrTokenUser) {
		t.Fatalf("two users, no microsoft_ads.user: err = %v, want ErrTokenUser", err)
	}
	for _, want := range []string{"alice@contoso.com (id 1)", "bob@contoso.com (id 2)", "microsoft_ads.user", "client-1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	for user, want := range map[string]string{"BOB@contoso.com": "rt-of-bob@contoso.com", "1": "rt-of-alice@contoso.com"} {
		k := key
		k.User = user
		if tok, err := b.store.Tokens(k).Load(ctx); err != nil || tok != want {
			t.Errorf("user %q: Load = %q, %v; want %q", user, tok, err, want)
		}
	}
	k := key
	k.User = "carol@contoso.com"
	if _, err := b.store.Tokens(k).Load(ctx); !errors.Is(err, ErrTokenUser) || !strings.Contains(err.Error(), "alice@contoso.com") {
		t.Errorf("unknown user: err = %v, want ErrTokenUser listing the users", err)
	}
}

func TestSignIns(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{TokenKey: "k"})
	ctx := t.Context()
	for _, si := range []SignIn{
		{State: "s1", Environment: "production", ClientID: "c", RedirectURI: "http://localhost:8400/", Verifier: "verifier-one"},
		{State: "s2", Environment: "production", ClientID: "c", RedirectURI: "http://localhost:8400/", Verifier: "verifier-two"},
	} {
		if err := b.store.SaveSignIn(ctx, si); err != nil {
			t.Fatal(err)
		}
	}
	equal(t, "verifiers at rest", b.strings(t, `SELECT kind, position(convert_to('verifier', 'UTF8') IN verifier) FROM oauth_sign_ins ORDER BY state`),
		[]string{"aes-gcm|0", "aes-gcm|0"})
	if _, found, err := b.store.TakeSignIn(ctx, "production", "other-client", "s1"); err != nil || found {
		t.Errorf("another client's: found %v, %v", found, err)
	}
	si, found, err := b.store.TakeSignIn(ctx, "production", "c", "s1")
	if err != nil || !found || si.Verifier != "verifier-one" || si.RedirectURI != "http://localhost:8400/" {
		t.Fatalf("TakeSignIn(s1) = %+v, %v, %v", si, found, err)
	}
	if _, found, _ := b.store.TakeSignIn(ctx, "production", "c", "s1"); found {
		t.Error("a sign-in was taken twice")
	}
	if _, err := b.pool.Exec(ctx, `UPDATE `+b.q("oauth_sign_ins")+` SET created_at = now() - interval '20 minutes'`); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := b.store.TakeSignIn(ctx, "production", "c", ""); found {
		t.Error("a sign-in older than 15 minutes was taken")
	}
}
