package extract

import "context"

// Authenticate makes sure the client holds a valid access token: when it
// has none, it redeems the refresh token (the stored one, else the
// configured one) once, saving a rotated refresh token to the TokenStore as
// every refresh does. It returns the token endpoint's failure: a
// *TokenError (its Fix says what to change), or an error matching
// ErrReauth when there is no refresh token at all. `syncer check` uses it
// to test the refresh on its own, before any API call.
func (c *Client) Authenticate(ctx context.Context) error {
	_, err := c.tokens.token(ctx)
	return err
}
