package cli

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/msads-syncer/syncer/internal/config"
	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/redact"
	"github.com/msads-syncer/syncer/internal/status"
)

// errorLine is how every error reaches stderr: the secrets of the loaded
// configuration removed by value where they occur whole (redact.Whole),
// on one line (see oneLine).
func errorLine(io IO, msg string) string {
	return oneLine(io.secrets.Redact(msg))
}

var lineBreaks = regexp.MustCompile(`\s*[\r\n]+\s*`)

// oneLine joins the lines of a message (errors.Join's, an API message's
// own line breaks) with "; ", so that every error is one line.
func oneLine(msg string) string {
	return strings.TrimSuffix(lineBreaks.ReplaceAllString(strings.TrimSpace(msg), "; "), "; ")
}

// addSecrets remembers the secret values of cfg, so that errorLine removes
// them from any error, whichever layer wrote it.
func addSecrets(io IO, cfg *config.Config) {
	if io.secrets == nil {
		return
	}
	db := cfg.Database.URL.Value()
	io.secrets.Add(db, cfg.Database.TokenKey.Value(),
		cfg.MicrosoftAds.DeveloperToken.Value(), cfg.MicrosoftAds.ClientSecret.Value(), cfg.MicrosoftAds.RefreshToken.Value(),
		cfg.Evidence.SigningKey.Value())
	if pc, err := pgconn.ParseConfig(db); err == nil {
		io.secrets.Add(redact.Password(pc.Password)...)
	}
	io.secrets.Add(redact.URL(cfg.Invitations.WebhookURL.Value())...)
	io.secrets.Add(redact.Userinfo(cfg.Metrics.PushgatewayURL)...)
}

// maxCustomerError bounds each customer's error in the last line of a run.
const maxCustomerError = 200

// failedCustomers is the last line of a run some of whose customers failed:
// how many, then each failed customer with its first error, truncated.
// "2 of 6 customers failed: 150001753 (GetUser …: code 106 …); 150002071
// (removal guard: …)".
func failedCustomers(res *job.Result) string {
	var parts []string
	for _, c := range res.Customers {
		if c.Status == status.Succeeded || c.Status == status.Skipped {
			continue
		}
		parts = append(parts, fmt.Sprintf("%d (%s)", c.CustomerID, truncate(oneLine(c.Error), maxCustomerError)))
	}
	if res.Failed == 0 && res.Error != "" {
		return res.Error // every customer synced, something after them failed (the role sweep)
	}
	head := fmt.Sprintf("%d of %d customers failed", res.Failed, len(res.Customers))
	if res.Failed == len(res.Customers) {
		head = fmt.Sprintf("all %d customers failed", res.Failed)
	}
	if res.SweepError != "" {
		parts = append(parts, "and the roles of users no customer lists any more could not be removed: "+truncate(oneLine(res.SweepError), maxCustomerError))
	}
	if len(parts) == 0 {
		return head
	}
	return head + ": " + strings.Join(parts, "; ")
}

// truncate cuts s to at most n bytes (on a rune boundary), marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
