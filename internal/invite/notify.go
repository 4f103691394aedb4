package invite

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/redact"
	"github.com/msads-syncer/syncer/internal/report"
	"github.com/msads-syncer/syncer/internal/retryafter"
)

// Defaults of the Notifier's optional fields.
const (
	DefaultAttempts  = 4
	DefaultRetryWait = time.Second
	DefaultTimeout   = 15 * time.Second // one attempt, when Client is nil
	// DefaultPostTimeout bounds the post of one message, every attempt and
	// wait between them included: a receiver that hangs holds a run's
	// follow-ups (and the process at exit) this long at most, not the
	// attempts times DefaultTimeout plus the waits (about 80 s).
	DefaultPostTimeout = 10 * time.Second

	maxRetryWait   = 30 * time.Second // cap of one wait, Retry-After included
	maxTextItems   = 50               // invitations listed in a message's text
	maxBodyInError = 256              // bytes of a failed response kept in the error
)

// Notifier posts stale invitations to a webhook: one JSON message per
// customer, with a Slack-compatible "text" (mrkdwn) and structured fields
// for other receivers (see Message). Each invitation is announced at most
// once per period: an announcement is recorded in the invitation_alerts table
// only after its post succeeded, so a failed post is retried on the next
// call.
//
// The URL is a secret (Slack webhook URLs carry a token): no error or log
// line of the Notifier contains it.
type Notifier struct {
	URL    string
	Client *http.Client // nil: a client with DefaultTimeout
	Logger *slog.Logger // nil: no logs

	// Customers limits the announcements to these customers; empty means all.
	Customers []int64
	// Period is how long an announced invitation stays quiet; zero means the
	// staleAfter passed to Notify.
	Period time.Duration
	// Attempts is the number of tries of one post (DefaultAttempts when 0);
	// RetryWait the first wait between tries, doubled each time
	// (DefaultRetryWait when 0). 429 and 5xx answers and network errors are
	// retried; other 4xx answers are not.
	Attempts  int
	RetryWait time.Duration
	// PostTimeout bounds one message's post, retries included
	// (DefaultPostTimeout when 0).
	PostTimeout time.Duration
}

// NotifyResult counts what one Notify call did.
type NotifyResult struct {
	Messages  int  // posts that succeeded, one per customer
	Failed    int  // posts that failed after their retries
	Announced int  // invitations recorded as announced
	Skipped   bool // another process was announcing for this schema; nothing done
}

// AnnounceLeaseKey is the sync_leases key of the webhook announcer: one
// process announces for a schema at a time.
const AnnounceLeaseKey = "announce"

// announceLeaseTTL is the announcer's lease time-to-live: a crashed
// announcer's lease is taken over after this long.
const announceLeaseTTL = time.Minute

// Message is the JSON body posted for one customer. Ids are strings so that
// receivers that read numbers as float64 (JavaScript) keep every digit.
type Message struct {
	Text         string              `json:"text"`
	CustomerID   string              `json:"customer_id"`
	CustomerName string              `json:"customer_name"`
	StaleAfter   string              `json:"stale_after"`
	Invitations  []MessageInvitation `json:"invitations"`
}

// MessageInvitation is the JSON form of one invitation, in webhook messages
// and in `syncer invitations --format json`. Ids are strings, as the
// Microsoft API sends them, so JavaScript receivers keep every digit.
type MessageInvitation struct {
	InvitationID    string     `json:"invitation_id"`
	Email           string     `json:"email"`
	RoleID          int32      `json:"role_id"`
	RoleName        string     `json:"role_name"`
	AccountIDs      []string   `json:"account_ids"` // null: every account of the customer
	FirstSeenAt     time.Time  `json:"first_seen_at"`
	AgeSeconds      int64      `json:"age_seconds"`
	EstimatedSentAt *time.Time `json:"estimated_sent_at"`
	ExpirationDate  *time.Time `json:"expiration_date"`
	Expired         bool       `json:"expired"`
}

// Notify announces the invitations of schema that are stale at now (first
// seen more than staleAfter before now, or expired) and were not announced
// within the period before now. It posts one message per customer, records
// the invitations of each successful post, and goes on with the next
// customer when a post fails. The error joins the failures; the result
// counts what was done either way.
//
// Only one process announces for a schema at a time: when another holds the
// announcement lock, Notify returns at once with Skipped set.
func (n *Notifier) Notify(ctx context.Context, pool *pgxpool.Pool, schema string, staleAfter time.Duration, now time.Time) (NotifyResult, error) {
	var res NotifyResult
	if n.URL == "" {
		return res, errors.New("notify: no webhook url configured (invitations.webhook_url)")
	}
	if u, err := url.Parse(n.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return res, errors.New("notify: the webhook url is not an http(s) URL")
	}
	period := cmp.Or(n.Period, staleAfter)

	// One announcer per schema: the lease "announce" in sync_leases (the
	// run lease's mechanism; it holds behind transaction poolers too).
	store := load.NewStore(pool, load.Options{Schema: schema, Logger: n.Logger})
	lease, ok, err := store.AcquireLease(ctx, AnnounceLeaseKey, announceLeaseTTL)
	if err != nil {
		return res, fmt.Errorf("notify: take the announcement lease: %w", err)
	}
	if !ok {
		n.logger().InfoContext(ctx, "another process is announcing stale invitations; skipped", slog.String("schema", schema))
		res.Skipped = true
		return res, nil
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := lease.Release(uctx); err != nil {
			n.logger().WarnContext(ctx, "could not release the announcement lease", slog.Any("error", err))
		}
	}()
	ctx = lease.Context()

	due, err := n.due(ctx, pool, schema, staleAfter, period, now)
	if err != nil {
		return res, err
	}
	var errs []error
	groups := ByCustomer(due)
	for i, group := range groups {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		c := group[0]
		log := n.logger().With(slog.Int64("customer_id", c.CustomerID), slog.Int("invitations", len(group)))
		if err := n.post(ctx, newMessage(group, staleAfter)); err != nil {
			res.Failed++
			errs = append(errs, fmt.Errorf("customer %d: %w", c.CustomerID, err))
			log.WarnContext(ctx, "stale invitations not announced; retried on the next run", slog.Any("error", err))
			if receiverDown(err) {
				// Retries are spent and every message goes to the same
				// receiver: do not spend them again on each customer.
				if rest := len(groups) - i - 1; rest > 0 {
					res.Failed += rest
					errs = append(errs, fmt.Errorf("%d more customers not announced: the webhook is unavailable", rest))
				}
				break
			}
			continue
		}
		res.Messages++
		ids := make([]int64, len(group))
		for i, inv := range group {
			ids[i] = inv.InvitationID
		}
		if err := load.RecordAnnounced(ctx, pool, lease, schema, ids, now); err != nil {
			// Posted but not remembered: the next run announces them again.
			errs = append(errs, fmt.Errorf("customer %d: %w", c.CustomerID, err))
			log.ErrorContext(ctx, "stale invitations announced but not recorded", slog.Any("error", err))
			continue
		}
		res.Announced += len(ids)
		log.InfoContext(ctx, "stale invitations announced")
	}
	return res, errors.Join(errs...)
}

func (n *Notifier) logger() *slog.Logger {
	if n.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return n.Logger
}

// due selects the stale invitations not announced within the period.
func (n *Notifier) due(ctx context.Context, pool *pgxpool.Pool, schema string, staleAfter, period time.Duration, now time.Time) ([]Invitation, error) {
	invs, err := load.DueInvitations(ctx, pool, schema, staleAfter, period, now, n.Customers)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	return invitations(invs), nil
}

// ByCustomer splits invitations ordered by customer (as Stale returns them)
// into one group per customer.
func ByCustomer(invs []Invitation) [][]Invitation {
	var out [][]Invitation
	for i := 0; i < len(invs); {
		j := i + 1
		for j < len(invs) && invs[j].CustomerID == invs[i].CustomerID {
			j++
		}
		out = append(out, invs[i:j])
		i = j
	}
	return out
}

// newMessage builds the message of one customer's invitations.
func newMessage(invs []Invitation, staleAfter time.Duration) Message {
	c := invs[0]
	m := Message{
		CustomerID:   strconv.FormatInt(c.CustomerID, 10),
		CustomerName: c.CustomerName,
		StaleAfter:   staleAfter.String(),
		Invitations:  make([]MessageInvitation, len(invs)),
	}
	for i, inv := range invs {
		m.Invitations[i] = inv.JSON()
	}
	m.Text = messageText(invs, staleAfter)
	return m
}

// JSON returns the invitation's JSON form.
func (inv Invitation) JSON() MessageInvitation {
	var accounts []string
	if inv.AccountIDs != nil {
		accounts = make([]string, len(inv.AccountIDs))
		for k, id := range inv.AccountIDs {
			accounts[k] = strconv.FormatInt(id, 10)
		}
	}
	return MessageInvitation{
		InvitationID:    strconv.FormatInt(inv.InvitationID, 10),
		Email:           inv.Email,
		RoleID:          inv.RoleID,
		RoleName:        inv.RoleName,
		AccountIDs:      accounts,
		FirstSeenAt:     inv.FirstSeenAt.UTC(),
		AgeSeconds:      int64(inv.Age / time.Second),
		EstimatedSentAt: utc(inv.EstimatedSentAt),
		ExpirationDate:  utc(inv.ExpirationDate),
		Expired:         inv.Expired,
	}
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// messageText is the Slack mrkdwn text of one customer's message.
func messageText(invs []Invitation, staleAfter time.Duration) string {
	c := invs[0]
	var b strings.Builder
	noun := "invitations"
	if len(invs) == 1 {
		noun = "invitation"
	}
	who := strconv.FormatInt(c.CustomerID, 10)
	if c.CustomerName != "" {
		who = "*" + slackEscape(c.CustomerName) + "* (" + who + ")"
	}
	fmt.Fprintf(&b, ":warning: %d stale Microsoft Advertising %s for customer %s: sent more than %s ago, or expired but still listed. "+
		"Anyone who holds an invitation link can accept it with any login; cancel those not needed in the Microsoft Advertising web UI.",
		len(invs), noun, who, report.Age(staleAfter))
	for i, inv := range invs {
		if i == maxTextItems {
			fmt.Fprintf(&b, "\n…and %d more (see the invitations field, or `syncer invitations`)", len(invs)-maxTextItems)
			break
		}
		email := inv.Email
		if email == "" {
			email = "(no email)"
		}
		accounts := "every account"
		if inv.AccountIDs != nil {
			accounts = "accounts " + report.Cell(inv.AccountIDs)
		}
		if inv.EstimatedSentAt != nil {
			fmt.Fprintf(&b, "\n• %s: %s, %s; sent about %s ago (%s)", slackEscape(email), slackEscape(inv.RoleName), accounts,
				report.Age(inv.Age), inv.EstimatedSentAt.UTC().Format(time.DateOnly))
		} else {
			fmt.Fprintf(&b, "\n• %s: %s, %s; first seen %s ago", slackEscape(email), slackEscape(inv.RoleName), accounts, report.Age(inv.Age))
		}
		switch {
		case inv.ExpirationDate == nil:
		case inv.Expired:
			fmt.Fprintf(&b, "; *expired* %s", inv.ExpirationDate.UTC().Format(time.DateOnly))
		default:
			fmt.Fprintf(&b, "; expires %s", inv.ExpirationDate.UTC().Format(time.DateOnly))
		}
	}
	return b.String()
}

// slackEscape escapes the three characters Slack's mrkdwn reserves.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// post sends one message, retrying 429, 5xx and network errors.
func (n *Notifier) post(ctx context.Context, m Message) error {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(n.PostTimeout, DefaultPostTimeout))
	defer cancel()
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	client := n.Client
	if client == nil {
		client = &http.Client{Timeout: DefaultTimeout}
	}
	exp := backoff.NewExponentialBackOff()
	exp.InitialInterval = cmp.Or(n.RetryWait, DefaultRetryWait)
	exp.MaxInterval = maxRetryWait
	exp.MaxElapsedTime = 0 // bounded by the number of attempts
	var retryAfter time.Duration
	attempts := cmp.Or(n.Attempts, DefaultAttempts)
	b := backoff.WithContext(backoff.WithMaxRetries(&hintedBackOff{BackOff: exp, hint: &retryAfter}, uint64(max(attempts-1, 0))), ctx)

	op := func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(body))
		if err != nil {
			return backoff.Permanent(n.redact(fmt.Errorf("build request: %w", err)))
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "msads-syncer")
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return backoff.Permanent(ctx.Err())
			}
			return n.redact(fmt.Errorf("post: %w", unwrapURLError(err)))
		}
		defer resp.Body.Close()
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxBodyInError))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return nil
		}
		err = n.redact(&StatusError{StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(snippet))})
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			retryAfter, _ = retryafter.Parse(resp.Header.Get("Retry-After"), time.Now(), maxRetryWait)
			return err
		}
		return backoff.Permanent(err)
	}
	notify := func(err error, wait time.Duration) {
		n.logger().DebugContext(ctx, "webhook post failed; retrying", slog.Any("error", err), slog.Duration("wait", wait))
	}
	if err := backoff.RetryNotify(op, b, notify); err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	return nil
}

// receiverDown tells a receiver that is unreachable or failing (network
// error, 429, 5xx) from one that rejected a message (other 4xx).
func receiverDown(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.StatusCode == http.StatusTooManyRequests || se.StatusCode >= 500
	}
	return true
}

// StatusError is a webhook answer other than 2xx.
type StatusError struct {
	StatusCode int
	Body       string // the answer's first bytes
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("answered HTTP %d", e.StatusCode)
	}
	return fmt.Sprintf("answered HTTP %d: %s", e.StatusCode, e.Body)
}

// unwrapURLError drops the *url.Error layer, whose message holds the URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("timeout: %w", ue.Err)
		}
		return ue.Err
	}
	return err
}

// redact removes the webhook URL, and its secret path and query, from an
// error's message (an echoing server or a lower layer may include them).
// errors.As still finds a *StatusError; the unwrapped error's own message
// may hold the URL, so do not print it.
func (n *Notifier) redact(err error) error {
	return redact.Error(err, redact.URL(n.URL)...)
}

// hintedBackOff waits at least the server's Retry-After, capped.
type hintedBackOff struct {
	backoff.BackOff
	hint *time.Duration
}

func (b *hintedBackOff) NextBackOff() time.Duration {
	d := b.BackOff.NextBackOff()
	if d != backoff.Stop && *b.hint > d {
		d = min(*b.hint, maxRetryWait)
	}
	*b.hint = 0
	return d
}
