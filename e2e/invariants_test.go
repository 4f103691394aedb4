package e2e_test

// The invariant checker shared by every fault-injection case (see
// RELIABILITY.md). A case drives runs through a world, which keeps the API
// truth of each run (a Dataset clone taken just before it: in these tests
// the API changes only between runs) and which sync_runs rows each run
// wrote. checkInvariants then compares the warehouse with that truth:
//
//   - per customer, its current users (keys, user_name, email), current
//     invitations (keys, email) and current accounts (keys, name) equal
//     exactly what the API version seen by its last successful sync listed
//     (a customer never synced has none): never a mix of two versions;
//   - no users or invitations row is marked removed that this version lists;
//   - the current roles of every listed readable user equal the roles the
//     API version of the latest successful sync that listed the user gave;
//     a user no successful sync lists any more has no current role;
//   - every history table, per key: intervals ordered by valid_from chain
//     exactly (each valid_to is the next valid_from: no overlap, no gap),
//     only the last is open and it is open, the first change is 'added',
//     'reappeared' follows exactly 'removed'; the entity row agrees with its
//     last version (current ⇔ last change not 'removed', same values); a
//     history row of users or invitations was written by a run in which its
//     customer succeeded;
//   - run status and exit code agree: 0 ⇔ succeeded; 2 ⇔ partial, or
//     canceled after some customers; 1 ⇔ failed (or no run recorded); a run
//     that found the lock held exits 0 and records nothing;
//     customers_failed = customers_total − customers that succeeded.
//
// Failures name the customer or the key and what differs, and end with the
// command that replays the case.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/msads"
)

// ---- seeds ----

// caseSeed returns the seed of a random case: SYNCER_SEED when set, else
// the time; mixed with the test's name so each case draws its own numbers.
// It logs the seed and the command that replays the case.
func caseSeed(t *testing.T) (seed int64, replay string) {
	t.Helper()
	base := suiteSeed()
	if s := os.Getenv("SYNCER_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("SYNCER_SEED=%q is not an integer", s)
		}
		base = n
	}
	h := fnv.New64a()
	h.Write([]byte(t.Name()))
	seed = base ^ int64(h.Sum64()>>1)
	replay = fmt.Sprintf("replay: SYNCER_SEED=%d go test -race -count=1 -run '^%s$' ./e2e/", base, runPattern(t.Name()))
	t.Logf("seed %d (case seed %d); %s", base, seed, replay)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d; %s", base, replay)
		}
	})
	return seed, replay
}

// suiteSeed is one time-based seed for the whole test binary, so one
// SYNCER_SEED replays every case of a run.
var suiteSeed = sync.OnceValue(func() int64 { return time.Now().UnixNano() % 1_000_000_000 })

// runPattern turns a test name into a -run pattern (each level anchored).
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	return strings.Join(parts, "$/^")
}

// ---- the world: API versions and runs ----

// world is one case's history: the API versions, the runs and what they
// recorded. The refresh token given to every run is the one the simulator
// issued first (as a Secret that never changes would): later runs must
// rely on the rotated one the syncer stored.
type world struct {
	t        *testing.T
	e        *env
	replay   string
	token    string
	versions []*apiVersion
	runs     []*runRec
	lastRun  int64
	// snap, while the checker runs, is its one repeatable-read snapshot:
	// every query sees the same committed state (a killed run's backend
	// may still commit a COMMIT sent just before the SIGKILL).
	snap pgx.Tx
	// creds are the sign-ins runs use: creds[0] is the env's default
	// credential (every customer of the data); addCredential adds more.
	creds []*credential
}

// credential is one sign-in of the world's runs: its config file, the
// secrets its environment gives, and the customers it reaches. Several
// credentials write one schema side by side (design: "Several credentials
// (several logins) are several CronJobs writing to the same schema").
type credential struct {
	name string
	// config is its config file; "" for the default credential: the env's
	// (w.e.config, which a case may swap).
	config                                  string
	devToken, clientID, clientSecret, token string // token: the refresh token every run is given
	// customers it reaches; nil: every customer of the data. The API
	// version a run of it is judged against holds only these, and only the
	// roles in them (what GetUser shows this credential).
	customers []int64
	key       string // sync_runs.credential_key
}

// query runs q on the checker's snapshot, or on the pool outside it.
func (w *world) query(ctx context.Context, q string, args ...any) (pgx.Rows, error) {
	if w.snap != nil {
		return w.snap.Query(ctx, w.sql(q), args...)
	}
	return w.e.pool.Query(ctx, w.sql(q), args...)
}

// runRec is one `syncer run` (or several started at once, a group).
type runRec struct {
	label   string
	version int // index in world.versions
	cred    int // index in world.creds
	results []result
	killed  bool    // SIGKILLed: no exit code to judge
	runIDs  []int64 // sync_runs rows it created
}

func newWorld(t *testing.T, e *env, replay string) *world {
	w := &world{t: t, e: e, replay: replay, token: e.sim.RefreshToken()}
	w.creds = []*credential{{name: "default", devToken: e.sim.DeveloperToken(), clientID: e.sim.ClientID(),
		clientSecret: e.sim.ClientSecret(), token: w.token, key: job.CredentialKey(e.sim.ClientID(), e.sim.DeveloperToken())}}
	return w
}

// addCredential adds a sign-in that reaches only customers: a config like
// the env's with its own OAuth client id and customer ids, and its own
// developer token, client secret and refresh token in the environment. It
// returns its index for runAs and runTogetherAs.
func (w *world) addCredential(name string, c *msadstest.Credential, customers []int64) int {
	w.t.Helper()
	b, err := os.ReadFile(w.e.config)
	if err != nil {
		w.t.Fatal(err)
	}
	y := strings.Replace(string(b), fmt.Sprintf("client_id: %q", w.e.sim.ClientID()), fmt.Sprintf("client_id: %q", c.ClientID()), 1)
	ids := make([]string, len(customers))
	for i, id := range customers {
		ids[i] = strconv.FormatInt(id, 10)
	}
	y = regexp.MustCompile(`(?m)^  ids: \[.*\]$`).ReplaceAllLiteralString(y, "  ids: ["+strings.Join(ids, ", ")+"]")
	if !strings.Contains(y, c.ClientID()) || !strings.Contains(y, "  ids: ["+strings.Join(ids, ", ")+"]") {
		w.t.Fatalf("addCredential: could not rewrite the config for %s:\n%s", name, y)
	}
	p := filepath.Join(w.e.dir, "config-"+name+".yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		w.t.Fatal(err)
	}
	w.creds = append(w.creds, &credential{name: name, config: p, devToken: c.DeveloperToken(), clientID: c.ClientID(),
		clientSecret: c.ClientSecret(), token: c.RefreshToken(), customers: slices.Clone(customers),
		key: job.CredentialKey(c.ClientID(), c.DeveloperToken())})
	return len(w.creds) - 1
}

// version takes the API truth for the next run of the default credential.
func (w *world) version() int { return w.versionFor(0) }

// versionFor takes the API truth for the next run of credential cred: what
// the API shows that credential.
func (w *world) versionFor(cred int) int {
	v := newAPIVersion(w.e.sim.Dataset())
	if cs := w.creds[cred].customers; cs != nil {
		v.restrict(cs)
	}
	w.versions = append(w.versions, v)
	return len(w.versions) - 1
}

// latest is the index of the newest version.
func (w *world) latest() int { return len(w.versions) - 1 }

// start starts `syncer run` with the world's fixed refresh token.
func (w *world) start(ctx context.Context, args ...string) (*exec.Cmd, *strings.Builder, *strings.Builder) {
	w.t.Helper()
	return w.startAs(ctx, 0, args...)
}

// startAs starts `syncer run` as credential cred, with its config and its
// fixed refresh token.
func (w *world) startAs(ctx context.Context, cred int, args ...string) (*exec.Cmd, *strings.Builder, *strings.Builder) {
	w.t.Helper()
	c := w.creds[cred]
	config, token := c.config, c.token
	if cred == 0 {
		config, token = w.e.config, w.token
	}
	cmd := exec.CommandContext(ctx, binary, append([]string{"run", "--config", config}, args...)...)
	cmd.Env = append(os.Environ(),
		"TEST_DEV_TOKEN="+c.devToken,
		"TEST_CLIENT_SECRET="+c.clientSecret,
		"TEST_REFRESH_TOKEN="+token,
	)
	var o, er strings.Builder
	cmd.Stdout, cmd.Stderr = &lockedWriter{b: &o}, &lockedWriter{b: &er}
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	return cmd, &o, &er
}

type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (w *world) wait(cmd *exec.Cmd, o, er *strings.Builder) result {
	err := cmd.Wait()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			w.t.Fatal(err)
		}
	}
	return result{code: code, stdout: o.String(), stderr: er.String()}
}

// run runs one sync to its end under a fresh API version and records it.
func (w *world) run(label string, args ...string) result {
	w.t.Helper()
	v := w.version()
	ctx, cancel := context.WithTimeout(w.t.Context(), time.Minute)
	defer cancel()
	cmd, o, er := w.start(ctx, args...)
	r := w.wait(cmd, o, er)
	w.record(&runRec{label: label, version: v, results: []result{r}})
	return r
}

// runUnlocked is run, repeated (a few times) while the run finds the lock
// held: the session of a SIGKILLed run may hold it a moment longer.
func (w *world) runUnlocked(label string, args ...string) result {
	w.t.Helper()
	for i := 0; ; i++ {
		r := w.run(label, args...)
		if !foundLocked(r) || i == 20 {
			return r
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runKilled starts a sync under a fresh API version and SIGKILLs it after
// delay. finished reports that it ended on its own first.
func (w *world) runKilled(label string, delay time.Duration) (r result, finished bool) {
	w.t.Helper()
	v := w.version()
	ctx, cancel := context.WithTimeout(w.t.Context(), time.Minute)
	defer cancel()
	cmd, o, er := w.start(ctx)
	done := make(chan struct{})
	go func() {
		select {
		case <-time.After(delay):
			_ = cmd.Process.Signal(syscall.SIGKILL)
		case <-done:
		}
	}()
	r = w.wait(cmd, o, er)
	close(done)
	finished = r.code >= 0
	if !finished {
		w.settle()
		w.expireLeases()
	}
	w.record(&runRec{label: label, version: v, results: []result{r}, killed: !finished})
	return r, finished
}

// expireLeases ends now the leases a SIGKILLed run left, as its lease_ttl
// would a moment later: the next run takes the lease over (and marks the
// killed run abandoned) at once, by the same path as after the wait,
// instead of finding it held and trying again until it expires.
func (w *world) expireLeases() {
	w.t.Helper()
	if _, err := w.e.pool.Exec(w.t.Context(), w.sql("UPDATE {S}.sync_leases SET expires_at = clock_timestamp() WHERE expires_at > clock_timestamp()")); err != nil {
		w.t.Fatal(err)
	}
}

// settle waits until the sessions of a SIGKILLed run are gone: its run
// lock is free (the backend noticed the dead client), then a moment more for
// its other connections. A COMMIT sent just before the kill lands before
// the next run is recorded.
func (w *world) settle() {
	w.t.Helper()
	ctx := w.t.Context()
	var key string
	if err := w.e.pool.QueryRow(ctx, w.sql("SELECT coalesce(max(credential_key), '') FROM {S}.oauth_tokens")).Scan(&key); err != nil || key == "" {
		time.Sleep(200 * time.Millisecond)
		return
	}
	name := "syncer:" + w.e.schema + ":run:" + key
	deadline := time.Now().Add(10 * time.Second)
	conn, err := w.e.pool.Acquire(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	defer conn.Release()
	for time.Now().Before(deadline) {
		var ok bool
		// Taken and given back on one session: free again at once.
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AND pg_advisory_unlock(hashtextextended($1, 0))", name).Scan(&ok); err != nil {
			w.t.Fatal(err)
		}
		if ok {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
}

// runTogether starts n syncs at once under one API version.
//
// With a gate (held, in front of the API), the runs race for the lease as
// they will, but none gets past its first API call until one of them has
// ended: the one that won the lease cannot finish before the others tried
// it, however the machine schedules them. The gate opens then (or after
// 30 s, when none ended: both must have held the lease, which the caller's
// checks report).
func (w *world) runTogether(label string, n int, gate *apiGate) []result {
	w.t.Helper()
	v := w.version()
	ctx, cancel := context.WithTimeout(w.t.Context(), time.Minute)
	defer cancel()
	out := make([]result, n)
	ended := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i := range out {
		cmd, o, er := w.start(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = w.wait(cmd, o, er)
			ended <- struct{}{}
		}()
	}
	if gate != nil {
		select {
		case <-ended:
		case <-time.After(30 * time.Second):
		}
		gate.Open()
	}
	wg.Wait()
	w.record(&runRec{label: label, version: v, results: out})
	return out
}

// runAs runs one sync of credential cred to its end under a fresh API
// version and records it.
func (w *world) runAs(label string, cred int, args ...string) result {
	w.t.Helper()
	v := w.versionFor(cred)
	ctx, cancel := context.WithTimeout(w.t.Context(), time.Minute)
	defer cancel()
	cmd, o, er := w.startAs(ctx, cred, args...)
	r := w.wait(cmd, o, er)
	w.recordAs([]*runRec{{label: label, version: v, cred: cred, results: []result{r}}})
	return r
}

// runTogetherAs starts one sync per credential of creds at once (each
// under its own view of one API version), waits for all, and records each
// as its own run: the sync_runs rows are told apart by credential_key.
func (w *world) runTogetherAs(label string, creds ...int) []result {
	w.t.Helper()
	recs := make([]*runRec, len(creds))
	for i, c := range creds {
		recs[i] = &runRec{label: fmt.Sprintf("%s [%s]", label, w.creds[c].name), version: w.versionFor(c), cred: c}
	}
	ctx, cancel := context.WithTimeout(w.t.Context(), time.Minute)
	defer cancel()
	out := make([]result, len(creds))
	var wg sync.WaitGroup
	for i, c := range creds {
		cmd, o, er := w.startAs(ctx, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = w.wait(cmd, o, er)
		}()
	}
	wg.Wait()
	for i := range recs {
		recs[i].results = []result{out[i]}
	}
	w.recordAs(recs)
	return out
}

// recordAs attaches the sync_runs rows created since the previous run to
// recs, each the runs of its credential (by credential_key).
func (w *world) recordAs(recs []*runRec) {
	w.t.Helper()
	rows, err := w.e.pool.Query(w.t.Context(), w.sql("SELECT run_id, coalesce(credential_key, '') FROM {S}.sync_runs WHERE run_id > $1 ORDER BY run_id"), w.lastRun)
	if err != nil {
		w.t.Fatal(err)
	}
	type row struct {
		id  int64
		key string
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.key)
	})
	if err != nil {
		w.t.Fatal(err)
	}
	for _, x := range got {
		w.lastRun = max(w.lastRun, x.id)
		for _, r := range recs {
			if w.creds[r.cred].key == x.key {
				r.runIDs = append(r.runIDs, x.id)
				break
			}
		}
	}
	w.runs = append(w.runs, recs...)
}

// record attaches the sync_runs rows created since the previous run.
func (w *world) record(r *runRec) {
	w.t.Helper()
	rows, err := w.e.pool.Query(w.t.Context(), w.sql("SELECT run_id FROM {S}.sync_runs WHERE run_id > $1 ORDER BY run_id"), w.lastRun)
	if err != nil {
		w.t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		w.t.Fatal(err)
	}
	r.runIDs = ids
	if len(ids) > 0 {
		w.lastRun = ids[len(ids)-1]
	}
	w.runs = append(w.runs, r)
}

func (w *world) sql(q string) string {
	return strings.ReplaceAll(q, "{S}.", pgx.Identifier{w.e.schema}.Sanitize()+".")
}

func foundLocked(r result) bool {
	return r.code == 0 && strings.Contains(r.stderr, "holds the lock")
}

// ---- the API truth of one version ----

type roleKey struct {
	customer int64
	role     int32
}

type apiVersion struct {
	customers []int64
	reachable map[int64]bool
	// listed: customer → user → user_name (GetUsersInfo)
	listed map[int64]map[int64]string
	email  map[int64]string // user → Email (GetUser)
	// roles: user → visible roles (GetUser's CustomerRoles) → account ids
	// as stored ("NULL" or "{1,2}").
	roles       map[int64]map[roleKey]string
	invitations map[int64]map[int64]string // customer → invitation → email
	accounts    map[int64]map[int64]string // customer → account → name
}

func newAPIVersion(ds *msadstest.Dataset) *apiVersion {
	v := &apiVersion{customers: ds.CustomerIDs(), reachable: map[int64]bool{}, listed: map[int64]map[int64]string{},
		email: map[int64]string{}, roles: map[int64]map[roleKey]string{},
		invitations: map[int64]map[int64]string{}, accounts: map[int64]map[int64]string{}}
	names := map[int64]string{}
	for _, u := range ds.Users {
		names[u.ID] = u.UserName
		v.email[u.ID] = u.Email
	}
	for _, c := range v.customers {
		v.reachable[c] = true
		v.listed[c] = map[int64]string{}
		v.invitations[c] = map[int64]string{}
		v.accounts[c] = map[int64]string{}
	}
	for _, c := range v.customers {
		for _, id := range ds.ListedUserIDs(c) {
			name, ok := names[id]
			if !ok {
				for _, l := range ds.StaleListings {
					if l.CustomerID == c && l.UserID == id {
						name, ok = l.UserName, true
					}
				}
			}
			if ok {
				v.listed[c][id] = name
			}
		}
	}
	for _, r := range ds.Roles {
		if !v.reachable[r.CustomerID] {
			continue
		}
		if v.roles[r.UserID] == nil {
			v.roles[r.UserID] = map[roleKey]string{}
		}
		v.roles[r.UserID][roleKey{r.CustomerID, r.RoleID}] = arrayText(r.AccountIDs)
	}
	for _, inv := range ds.Invitations {
		if v.reachable[inv.CustomerID] {
			v.invitations[inv.CustomerID][inv.ID] = inv.Email
		}
	}
	for _, a := range ds.Accounts {
		if v.reachable[a.CustomerID] {
			v.accounts[a.CustomerID][a.ID] = a.Name
		}
	}
	return v
}

// restrict narrows the version to what a credential reaching only
// customers sees: those customers, and the roles in them.
func (v *apiVersion) restrict(customers []int64) {
	keep := map[int64]bool{}
	for _, c := range customers {
		if v.reachable[c] {
			keep[c] = true
		}
	}
	v.customers = slices.DeleteFunc(v.customers, func(c int64) bool { return !keep[c] })
	for c := range v.reachable {
		if !keep[c] {
			delete(v.reachable, c)
			delete(v.listed, c)
			delete(v.invitations, c)
			delete(v.accounts, c)
		}
	}
	for u, rs := range v.roles {
		for k := range rs {
			if !keep[k.customer] {
				delete(rs, k)
			}
		}
		if len(rs) == 0 {
			delete(v.roles, u)
		}
	}
}

// arrayText renders ids as the warehouse stores them: NULL for nil, else
// sorted.
func arrayText(ids []int64) string {
	if ids == nil {
		return "NULL"
	}
	s := slices.Sorted(slices.Values(ids))
	parts := make([]string, len(s))
	for i, id := range s {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// ---- the warehouse as read back ----

type dbUser struct {
	name, email, detail string
	current             bool
	removedBy           int64 // the run of its latest 'removed' history row (0: none)
}

type dbCustomerRows struct {
	users       map[int64]dbUser
	invitations map[int64]string // current only: id → email
	removedInv  map[int64]bool
	accounts    map[int64]string // current only: id → name
}

type dbRun struct {
	status              string
	finished            bool
	total, failed       int
	synced, failedSyncs int // customer_syncs rows by status
	err                 string
}

type warehouse struct {
	customers map[int64]*dbCustomerRows
	roles     map[int64]map[roleKey]string // current roles: user → key → account ids
	runs      map[int64]*dbRun
	// lastOK: customer → run_id of its last succeeded customer_syncs row.
	lastOK map[int64]int64
	// okRuns: customer → run_ids of all its succeeded customer_syncs rows.
	okRuns map[int64][]int64
}

func (w *world) read(tb testing.TB) (*warehouse, bool) {
	ctx := w.t.Context()
	db := &warehouse{customers: map[int64]*dbCustomerRows{}, roles: map[int64]map[roleKey]string{}, runs: map[int64]*dbRun{}, lastOK: map[int64]int64{}, okRuns: map[int64][]int64{}}
	cust := func(id int64) *dbCustomerRows {
		c := db.customers[id]
		if c == nil {
			c = &dbCustomerRows{users: map[int64]dbUser{}, invitations: map[int64]string{}, removedInv: map[int64]bool{}, accounts: map[int64]string{}}
			db.customers[id] = c
		}
		return c
	}
	type q struct {
		sql  string
		scan func(pgx.Rows) error
	}
	queries := []q{
		{`SELECT customer_id, user_id, coalesce(user_name, ''), coalesce(email, ''), detail_status, removed_at IS NULL,
			coalesce((SELECT h.run_id FROM {S}.users_history h WHERE h.customer_id = t.customer_id AND h.user_id = t.user_id
				AND h.change = 'removed' ORDER BY h.valid_from DESC LIMIT 1), 0)
			FROM {S}.users t`, func(r pgx.Rows) error {
			var c, u int64
			var x dbUser
			if err := r.Scan(&c, &u, &x.name, &x.email, &x.detail, &x.current, &x.removedBy); err != nil {
				return err
			}
			cust(c).users[u] = x
			return nil
		}},
		{`SELECT customer_id, invitation_id, coalesce(email, ''), removed_at IS NULL FROM {S}.user_invitations`, func(r pgx.Rows) error {
			var c, i int64
			var email string
			var cur bool
			if err := r.Scan(&c, &i, &email, &cur); err != nil {
				return err
			}
			if cur {
				cust(c).invitations[i] = email
			} else {
				cust(c).removedInv[i] = true
			}
			return nil
		}},
		{`SELECT customer_id, account_id, coalesce(name, '') FROM {S}.accounts WHERE removed_at IS NULL`, func(r pgx.Rows) error {
			var c, a int64
			var name string
			if err := r.Scan(&c, &a, &name); err != nil {
				return err
			}
			cust(c).accounts[a] = name
			return nil
		}},
		{`SELECT user_id, customer_id, role_id, coalesce(account_ids::text, 'NULL') FROM {S}.user_roles WHERE removed_at IS NULL`, func(r pgx.Rows) error {
			var u, c int64
			var role int32
			var acc string
			if err := r.Scan(&u, &c, &role, &acc); err != nil {
				return err
			}
			if db.roles[u] == nil {
				db.roles[u] = map[roleKey]string{}
			}
			db.roles[u][roleKey{c, role}] = acc
			return nil
		}},
		{`SELECT r.run_id, r.status, r.finished_at IS NOT NULL, r.customers_total, r.customers_failed,
		        count(s.*) FILTER (WHERE s.status = 'succeeded'), count(s.*) FILTER (WHERE s.status = 'failed'),
		        coalesce(r.error, '')
		   FROM {S}.sync_runs r LEFT JOIN {S}.customer_syncs s USING (run_id) GROUP BY r.run_id`, func(r pgx.Rows) error {
			var id int64
			x := &dbRun{}
			if err := r.Scan(&id, &x.status, &x.finished, &x.total, &x.failed, &x.synced, &x.failedSyncs, &x.err); err != nil {
				return err
			}
			db.runs[id] = x
			return nil
		}},
		{`SELECT customer_id, run_id FROM {S}.customer_syncs WHERE status = 'succeeded' ORDER BY run_id`, func(r pgx.Rows) error {
			var c, id int64
			if err := r.Scan(&c, &id); err != nil {
				return err
			}
			db.lastOK[c] = id
			db.okRuns[c] = append(db.okRuns[c], id)
			return nil
		}},
	}
	for _, x := range queries {
		rows, err := w.query(ctx, x.sql)
		if err != nil {
			tb.Errorf("invariants: read the warehouse: %v\n%s", err, x.sql)
			return nil, false
		}
		for rows.Next() {
			if err := x.scan(rows); err != nil {
				rows.Close()
				tb.Errorf("invariants: read the warehouse: %v", err)
				return nil, false
			}
		}
		if err := rows.Err(); err != nil {
			tb.Errorf("invariants: read the warehouse: %v", err)
			return nil, false
		}
	}
	return db, true
}

// ---- the checker ----

// checkInvariants checks every invariant of the warehouse against the
// world's API versions and runs, reporting each violation through tb.Errorf
// (it never stops the test). It returns the number of violations.
func checkInvariants(tb testing.TB, w *world) int {
	tb.Helper()
	n := 0
	fail := func(format string, args ...any) {
		tb.Helper()
		n++
		tb.Errorf("invariant: "+format+"\n\t"+w.replay, args...)
	}
	tx, err := w.e.pool.BeginTx(w.t.Context(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		tb.Errorf("invariants: begin the snapshot: %v", err)
		return 1
	}
	w.snap = tx
	defer func() {
		w.snap = nil
		_ = tx.Rollback(context.WithoutCancel(w.t.Context()))
	}()
	db, ok := w.read(tb)
	if !ok {
		return 1
	}
	versionOfRun := map[int64]int{}
	for _, r := range w.runs {
		for _, id := range r.runIDs {
			versionOfRun[id] = r.version
		}
	}
	w.checkRuns(fail, db)
	w.checkCustomers(fail, db, versionOfRun)
	w.checkRoles(fail, db, versionOfRun)
	w.checkHistory(fail)
	return n
}

type failFunc func(format string, args ...any)

// checkRuns: status and exit code agree; counts agree with customer_syncs.
func (w *world) checkRuns(fail failFunc, db *warehouse) {
	seen := map[int64]bool{}
	for i, r := range w.runs {
		for _, id := range r.runIDs {
			seen[id] = true
		}
		var active []result
		for _, res := range r.results {
			if foundLocked(res) {
				continue
			}
			active = append(active, res)
		}
		name := fmt.Sprintf("run %d (%s, API version %d)", i+1, r.label, r.version)
		if len(r.runIDs) > len(active) {
			fail("%s: %d sync_runs rows for %d runs that did not find the lock held (a locked run must record nothing)", name, len(r.runIDs), len(active))
			continue
		}
		for _, id := range r.runIDs {
			x := db.runs[id]
			if x == nil {
				continue
			}
			w.checkRunRow(fail, fmt.Sprintf("%s run_id %d", name, id), x)
		}
		if r.killed {
			for _, id := range r.runIDs {
				x := db.runs[id]
				if x == nil {
					continue
				}
				if x.status == "running" && i < len(w.runs)-1 { // a killed run is closed (abandoned) by the next one
					fail("%s (killed) run_id %d: still 'running' after later runs started: a dead run must not look alive", name, id)
				}
			}
			continue
		}
		// Pair results and rows: a result that recorded no row must be an
		// early failure (exit 1); with one row per active result, the
		// exit code must match its status.
		switch {
		case len(active) == 1 && len(r.runIDs) == 1:
			w.checkExit(fail, name, active[0], db.runs[r.runIDs[0]], r.runIDs[0])
		case len(r.runIDs) == 0:
			for _, res := range active {
				if res.code != 1 {
					fail("%s: exit %d but no run was recorded (only exit 1, nothing synced, may record none); stderr: %s", name, res.code, lastLines(res.stderr))
				}
			}
		default:
			// Several processes, several rows: each row's status must map
			// to one distinct exit code of the group.
			codes := map[int]int{}
			for _, res := range active {
				codes[res.code]++
			}
			for _, id := range r.runIDs {
				want := exitOf(db.runs[id])
				if codes[want] == 0 {
					fail("%s run_id %d: status %q wants exit %d, the group exited %v", name, id, db.runs[id].status, want, codes)
				}
				codes[want]--
			}
		}
		for _, res := range r.results {
			if res.code == 0 && !foundLocked(res) && len(r.runIDs) == 0 {
				fail("%s: exit 0 without a recorded run and without saying the lock is held", name)
			}
		}
	}
	for id, x := range db.runs {
		if !seen[id] {
			fail("sync_runs run_id %d (status %s) was recorded by no run of this test", id, x.status)
		}
	}
}

func (w *world) checkRunRow(fail failFunc, name string, x *dbRun) {
	if x.status == "abandoned" {
		return // a dead run closed by a later one: no count to check
	}
	if !x.finished {
		if x.status != "running" {
			fail("%s: status %q but finished_at is NULL", name, x.status)
		}
		return
	}
	if x.status == "running" {
		fail("%s: finished but status is still 'running'", name)
		return
	}
	if want := x.total - x.synced; x.failed != want {
		fail("%s: customers_failed = %d, but customers_total %d − %d customers succeeded in customer_syncs = %d", name, x.failed, x.total, x.synced, want)
	}
	if x.synced+x.failedSyncs > x.total {
		fail("%s: %d customer_syncs rows for customers_total %d", name, x.synced+x.failedSyncs, x.total)
	}
	switch x.status {
	case "succeeded":
		if x.failed != 0 || x.failedSyncs != 0 || x.synced != x.total || x.total == 0 {
			fail("%s: succeeded with customers_total %d, customers_failed %d, customer_syncs %d succeeded / %d failed", name, x.total, x.failed, x.synced, x.failedSyncs)
		}
	case "partial":
		if x.synced == 0 || x.failed == 0 || x.synced+x.failedSyncs != x.total {
			fail("%s: partial with customers_total %d, customers_failed %d, customer_syncs %d succeeded / %d failed", name, x.total, x.failed, x.synced, x.failedSyncs)
		}
	case "failed":
		// A run that lost its lease stops where it is and is failed (exit
		// 1) whatever its customers committed before (README, "One
		// writer"); any other failed run committed none.
		if x.synced != 0 && !strings.Contains(x.err, "the run lease was lost") {
			fail("%s: failed but %d customers succeeded in customer_syncs", name, x.synced)
		}
	}
}

// exitOf is the exit code a finished run's row calls for.
func exitOf(x *dbRun) int {
	switch {
	case x == nil:
		return 1
	case x.status == "succeeded":
		return 0
	case x.status == "partial", x.status == "canceled" && x.synced > 0:
		return 2
	default:
		return 1
	}
}

func (w *world) checkExit(fail failFunc, name string, res result, x *dbRun, id int64) {
	if x == nil {
		fail("%s: run_id %d vanished", name, id)
		return
	}
	if want := exitOf(x); res.code != want {
		fail("%s run_id %d: exit %d but status %q (%d of %d customers succeeded) calls for exit %d; stderr: %s",
			name, id, res.code, x.status, x.synced, x.total, want, lastLines(res.stderr))
	}
	if res.code != 0 && !strings.Contains(res.stderr, "syncer:") {
		fail("%s: exit %d without the one clear 'syncer: …' line on stderr", name, res.code)
	}
}

func lastLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return strings.Join(lines, " | ")
}

// checkCustomers: each customer's rows are exactly one API version's.
func (w *world) checkCustomers(fail failFunc, db *warehouse, versionOfRun map[int64]int) {
	all := map[int64]bool{}
	for _, v := range w.versions {
		for _, c := range v.customers {
			all[c] = true
		}
	}
	for c := range db.customers {
		all[c] = true
	}
	for _, c := range slices.Sorted(maps.Keys(all)) {
		rows := db.customers[c]
		if rows == nil {
			rows = &dbCustomerRows{}
		}
		runID, synced := db.lastOK[c]
		vi, known := versionOfRun[runID]
		if synced && !known {
			fail("customer %d: last successful sync is run_id %d, which no run of this test recorded", c, runID)
			continue
		}
		var diffs []string
		if !synced {
			diffs = diffAgainst(rows, nil, c)
			for _, d := range diffs {
				fail("customer %d (never synced successfully): %s", c, d)
			}
			continue
		}
		v := w.versions[vi]
		diffs = diffAgainst(rows, v, c)
		for _, d := range diffs {
			fail("customer %d (last successful sync run_id %d saw API version %d): %s", c, runID, vi, d)
		}
		if len(diffs) > 0 {
			var match []string
			for i, o := range w.versions {
				if len(diffAgainst(rows, o, c)) == 0 {
					match = append(match, strconv.Itoa(i))
				}
			}
			if len(match) == 0 {
				fail("customer %d: its rows match no API version: a mix of snapshots", c)
			} else {
				fail("customer %d: its rows match API version(s) %s, not version %d its last successful sync saw", c, strings.Join(match, ","), vi)
			}
		}
		// Removed rows the version still lists (named separately: the
		// worst kind of difference).
		for u, x := range rows.users {
			if _, listed := v.listed[c][u]; listed && !x.current {
				fail("customer %d: user %d is marked removed but API version %d lists it", c, u, vi)
			}
		}
		for i := range rows.removedInv {
			if _, listed := v.invitations[c][i]; listed {
				fail("customer %d: invitation %d is marked removed but API version %d lists it", c, i, vi)
			}
		}
	}
}

// diffAgainst lists how a customer's current rows differ from version v
// (nil: the customer must have no current rows).
func diffAgainst(rows *dbCustomerRows, v *apiVersion, c int64) []string {
	var out []string
	var listed map[int64]string
	var invs, accs map[int64]string
	var email map[int64]string
	if v != nil {
		listed, invs, accs, email = v.listed[c], v.invitations[c], v.accounts[c], v.email
	}
	for _, u := range slices.Sorted(maps.Keys(rows.users)) {
		x := rows.users[u]
		if !x.current {
			continue
		}
		name, ok := listed[u]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("user %d is current in the warehouse but the API does not list it", u))
		case x.name != name:
			out = append(out, fmt.Sprintf("user %d: user_name %q in the warehouse, the API says %q", u, x.name, name))
		case x.detail == "ok" && x.email != email[u]:
			out = append(out, fmt.Sprintf("user %d: email %q in the warehouse, the API says %q", u, x.email, email[u]))
		}
	}
	for _, u := range slices.Sorted(maps.Keys(listed)) {
		if x, ok := rows.users[u]; !ok || !x.current {
			out = append(out, fmt.Sprintf("user %d is listed by the API but not current in the warehouse", u))
		}
	}
	for _, i := range slices.Sorted(maps.Keys(rows.invitations)) {
		e, ok := invs[i]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("invitation %d is current in the warehouse but the API does not list it", i))
		case e != rows.invitations[i]:
			out = append(out, fmt.Sprintf("invitation %d: email %q in the warehouse, the API says %q", i, rows.invitations[i], e))
		}
	}
	for _, i := range slices.Sorted(maps.Keys(invs)) {
		if _, ok := rows.invitations[i]; !ok {
			out = append(out, fmt.Sprintf("invitation %d is listed by the API but not current in the warehouse", i))
		}
	}
	for _, a := range slices.Sorted(maps.Keys(rows.accounts)) {
		name, ok := accs[a]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("account %d is current in the warehouse but the API does not list it", a))
		case name != rows.accounts[a]:
			out = append(out, fmt.Sprintf("account %d: name %q in the warehouse, the API says %q", a, rows.accounts[a], name))
		}
	}
	for _, a := range slices.Sorted(maps.Keys(accs)) {
		if _, ok := rows.accounts[a]; !ok {
			out = append(out, fmt.Sprintf("account %d is listed by the API but not current in the warehouse", a))
		}
	}
	return out
}

// checkRoles: a user's current roles in a customer are those of the API
// version of the latest successful sync that listed and read the user and
// whose credential can see that customer (with one credential: the latest
// successful sync that listed the user, for every customer) — unless a
// later successful sync of that customer itself no longer listed the user:
// then the user holds no role there. Several
// credentials each see only the roles in their own customers, and each
// writes only what it sees.
func (w *world) checkRoles(fail failFunc, db *warehouse, versionOfRun map[int64]int) {
	// user → role customer → (version, run, customer) of the latest
	// successful sync listing it with a readable current row whose version
	// can see the role customer.
	type src struct {
		version  int
		run, cus int64
	}
	best := map[int64]map[int64]src{}
	skip := map[int64]bool{} // users with an unreadable current row: roles as last read
	for c, runID := range db.lastOK {
		vi, ok := versionOfRun[runID]
		if !ok {
			continue
		}
		v := w.versions[vi]
		rows := db.customers[c]
		for u := range v.listed[c] {
			if rows == nil {
				continue
			}
			x, ok := rows.users[u]
			if !ok || !x.current {
				continue // reported by checkCustomers
			}
			if x.detail != "ok" {
				skip[u] = true
				continue
			}
			if best[u] == nil {
				best[u] = map[int64]src{}
			}
			for k := range v.reachable {
				if b, ok := best[u][k]; !ok || runID > b.run {
					best[u][k] = src{vi, runID, c}
				}
			}
		}
	}
	// seenFrom reports whether a current users row of u is in a customer
	// whose last successful sync's credential can see customer k.
	seenFrom := func(u, k int64) bool {
		for c, rows := range db.customers {
			if x, ok := rows.users[u]; ok && x.current {
				if vi, ok := versionOfRun[db.lastOK[c]]; ok && w.versions[vi].reachable[k] {
					return true
				}
			}
		}
		return false
	}
	// listedElsewhereFor reports whether a customer other than k that the
	// credential of run r can see has a current users row of u: then r's
	// write of k, which dropped u, left u's roles in k to that listing's
	// GetUser (the removal rule is the credential's: a listing it cannot
	// see does not keep the roles).
	listedElsewhereFor := func(u, k, r int64) bool {
		vi, ok := versionOfRun[r]
		if !ok {
			return false
		}
		for c, rows := range db.customers {
			if c == k || !w.versions[vi].reachable[c] {
				continue
			}
			if x, ok := rows.users[u]; ok && x.current {
				return true
			}
		}
		return false
	}
	// droppedBeforeSweep: a users row of u was removed by the latest run,
	// which did not finish. The roles of a user no customer
	// lists any more, in customers other than the one that dropped it, are
	// removed by the roles sweep at the end of the run (removing them in
	// the customer's own transaction would race with another customer of
	// the run that now lists the user), so a run killed between that
	// customer's commit and its sweep leaves them current until the next
	// run's sweep; the checks after that run still require them gone.
	latest := int64(0)
	for r := range db.runs {
		latest = max(latest, r)
	}
	droppedBeforeSweep := func(u int64) bool {
		if r := db.runs[latest]; r == nil || r.finished {
			return false
		}
		for _, rows := range db.customers {
			if x, ok := rows.users[u]; ok && !x.current && x.removedBy == latest {
				return true
			}
		}
		return false
	}
	users := map[int64]bool{}
	for u := range best {
		users[u] = true
	}
	for u := range db.roles {
		users[u] = true
	}
	for _, u := range slices.Sorted(maps.Keys(users)) {
		if skip[u] {
			continue
		}
		got := db.roles[u]
		custs := map[int64]bool{}
		for k := range best[u] {
			custs[k] = true
		}
		for k := range got {
			custs[k.customer] = true
		}
		for _, rc := range slices.Sorted(maps.Keys(custs)) {
			gotC := map[roleKey]string{}
			for k, a := range got {
				if k.customer == rc {
					gotC[k] = a
				}
			}
			b, ok := best[u][rc]
			if !ok {
				// No successful sync that can see this customer lists the
				// user: written by none, or removed together with its last
				// users row. Current roles are allowed only while the user
				// still has a current users row that a credential seeing
				// this customer wrote.
				if len(gotC) > 0 && !seenFrom(u, rc) {
					if !hasCurrentRow(db, u) && droppedBeforeSweep(u) {
						continue // the killed run's sweep would have removed them; the next run's does
					}
					if !hasCurrentRow(db, u) {
						fail("user %d: %d current roles but no current users row and no successful sync lists it: %v", u, len(gotC), gotC)
					} else {
						fail("user %d: %d current roles in customer %d %v, but no successful sync of a credential that can see customer %d lists the user (its current users rows were written by credentials that cannot see it): nobody can ever remove them",
							u, len(gotC), rc, gotC, rc)
					}
				}
				continue
			}
			want := map[roleKey]string{}
			for k, a := range w.versions[b.version].roles[u] {
				if k.customer == rc {
					want[k] = a
				}
			}
			// A later successful sync of the role's own customer that no
			// longer lists the user removed the user's roles there, with
			// its users row, when no other listing the credential can see
			// still lists the user: that is the newer word on this
			// customer. (While another listing does, its GetUser decides.)
			if r, ok := db.lastOK[rc]; ok && r > b.run && !listedElsewhereFor(u, rc, r) {
				if vi, ok := versionOfRun[r]; ok {
					if _, listed := w.versions[vi].listed[rc][u]; !listed {
						clear(want)
					}
				}
			}
			// What later successful syncs (of customers whose last sync
			// no longer lists the user) said of the user's roles in rc:
			// a newer word than best's, also legitimate.
			var later []map[roleKey]string
			for c, runs := range db.okRuns {
				for _, r := range runs {
					vi, ok := versionOfRun[r]
					if !ok || r <= b.run || !w.versions[vi].reachable[rc] {
						continue
					}
					if _, listed := w.versions[vi].listed[c][u]; !listed {
						continue
					}
					m := map[roleKey]string{}
					for k, a := range w.versions[vi].roles[u] {
						if k.customer == rc {
							m[k] = a
						}
					}
					later = append(later, m)
				}
			}
			laterGives := func(k roleKey, a string) bool {
				for _, m := range later {
					if x, ok := m[k]; ok && x == a {
						return true
					}
				}
				return false
			}
			laterLacks := func(k roleKey) bool {
				for _, m := range later {
					if _, ok := m[k]; !ok {
						return true
					}
				}
				return false
			}
			for _, k := range slices.SortedFunc(maps.Keys(gotC), cmpRole) {
				a, ok := want[k]
				switch {
				case laterGives(k, gotC[k]):
				case !ok:
					fail("user %d: role %d in customer %d is current in the warehouse, but API version %d (seen by run_id %d through customer %d) does not give it",
						u, k.role, k.customer, b.version, b.run, b.cus)
				case a != gotC[k]:
					fail("user %d: role %d in customer %d: account_ids %s in the warehouse, API version %d (run_id %d, customer %d) says %s",
						u, k.role, k.customer, gotC[k], b.version, b.run, b.cus, a)
				}
			}
			for _, k := range slices.SortedFunc(maps.Keys(want), cmpRole) {
				if _, ok := gotC[k]; !ok && !laterLacks(k) {
					fail("user %d: role %d in customer %d given by API version %d (run_id %d, customer %d) is not current in the warehouse",
						u, k.role, k.customer, b.version, b.run, b.cus)
				}
			}
		}
	}
}

func cmpRole(a, b roleKey) int {
	if a.customer != b.customer {
		return int(a.customer - b.customer)
	}
	return int(a.role - b.role)
}

func hasCurrentRow(db *warehouse, u int64) bool {
	for _, c := range db.customers {
		if x, ok := c.users[u]; ok && x.current {
			return true
		}
	}
	return false
}

// historyTable describes one entity table and its history.
type historyTable struct {
	table, history string
	key            []string
	cols           []string // compared between the entity row and its last version
	customer       string   // the owning customer column, for run checks ("" = any)
}

var historyTables = []historyTable{
	{"users", "users_history", []string{"customer_id", "user_id"},
		[]string{"home_customer_id", "user_name", "email", "first_name", "last_name", "job_title", "lcid", "lifecycle_status", "last_modified_time", "detail_status"}, "customer_id"},
	{"user_roles", "user_roles_history", []string{"user_id", "customer_id", "role_id"},
		[]string{"account_ids", "linked_account_ids", "customer_link_permission"}, ""},
	{"user_invitations", "user_invitations_history", []string{"invitation_id"},
		[]string{"customer_id", "email", "first_name", "last_name", "role_id", "account_ids", "lcid", "expiration_date"}, "customer_id"},
}

// checkHistory: per key, intervals chain without gap or overlap, and agree
// with the entity row.
func (w *world) checkHistory(fail failFunc) {
	ctx := w.t.Context()
	for _, h := range historyTables {
		keys := strings.Join(h.key, ", ")
		keyText := "concat_ws(', '"
		for _, k := range h.key {
			keyText += ", '" + k + "=' || " + k
		}
		keyText += ")"
		// 1. The chain of intervals per key.
		q := `
WITH x AS (
    SELECT ` + keyText + ` AS k, valid_from, valid_to, change, run_id,
           lead(valid_from) OVER w AS next_from, lag(change) OVER w AS prev_change,
           row_number() OVER w AS n, count(*) OVER (PARTITION BY ` + keys + `) AS total
    FROM {S}.` + h.history + ` WINDOW w AS (PARTITION BY ` + keys + ` ORDER BY valid_from)
)
SELECT k, n, total, valid_from::text, coalesce(valid_to::text, 'NULL'), change, coalesce(next_from::text, ''), coalesce(prev_change, ''),
       CASE
         WHEN valid_to IS NOT NULL AND valid_to <= valid_from THEN 'empty or negative interval'
         WHEN n < total AND valid_to IS NULL THEN 'an interval before the last is open'
         WHEN n < total AND valid_to < next_from THEN 'gap: it ends before the next starts'
         WHEN n < total AND valid_to > next_from THEN 'overlap: it ends after the next starts'
         WHEN n = total AND valid_to IS NOT NULL THEN 'the last interval is closed'
         WHEN n = 1 AND change <> 'added' THEN 'the first version is not ''added'''
         WHEN n > 1 AND change = 'added' THEN '''added'' after the first version'
         WHEN n > 1 AND (change = 'reappeared') <> (prev_change = 'removed') THEN 'change ' || change || ' after ' || prev_change
       END AS problem
FROM x
WHERE (valid_to IS NOT NULL AND valid_to <= valid_from)
   OR (n < total AND (valid_to IS NULL OR valid_to <> next_from))
   OR (n = total AND valid_to IS NOT NULL)
   OR (n = 1 AND change <> 'added')
   OR (n > 1 AND change = 'added')
   OR (n > 1 AND (change = 'reappeared') <> (prev_change = 'removed'))
ORDER BY k, n`
		w.eachRow(fail, q, func(r pgx.Rows) error {
			var k, from, to, change, next, prev, problem string
			var n, total int
			if err := r.Scan(&k, &n, &total, &from, &to, &change, &next, &prev, &problem); err != nil {
				return err
			}
			fail("%s (%s): version %d of %d [%s, %s) %s (next starts %s, previous change %q): %s", h.history, k, n, total, from, to, change, next, prev, problem)
			return nil
		})
		// 2. The entity row and its last version.
		on := make([]string, len(h.key))
		for i, k := range h.key {
			on[i] = "h." + k + " = t." + k
		}
		tcols, hcols := prefixedCols("t.", h.cols), prefixedCols("h.", h.cols)
		q = `
SELECT ` + strings.ReplaceAll(keyText, "|| ", "|| t.") + `, t.removed_at IS NULL, coalesce(h.change, ''), h.valid_to IS NULL,
       (` + tcols + `) IS DISTINCT FROM (` + hcols + `) AS differs,
       coalesce(row(` + tcols + `)::text, ''), coalesce(row(` + hcols + `)::text, '')
FROM {S}.` + h.table + ` t
LEFT JOIN LATERAL (SELECT * FROM {S}.` + h.history + ` h WHERE ` + strings.Join(on, " AND ") + ` ORDER BY h.valid_from DESC LIMIT 1) h ON true
ORDER BY 1`
		w.eachRow(fail, q, func(r pgx.Rows) error {
			var k, change, trow, hrow string
			var current, open, differs bool
			if err := r.Scan(&k, &current, &change, &open, &differs, &trow, &hrow); err != nil {
				return err
			}
			switch {
			case change == "":
				fail("%s (%s): no history at all", h.table, k)
			case current && change == "removed":
				fail("%s (%s): current (removed_at NULL) but its last history change is 'removed'", h.table, k)
			case !current && change != "removed":
				fail("%s (%s): removed but its last history change is %q", h.table, k, change)
			case !open:
				fail("%s (%s): its last history interval is closed", h.table, k)
			case differs:
				fail("%s (%s): the row %s differs from its last history version %s", h.table, k, trow, hrow)
			}
			return nil
		})
		// 3. History of keys with no entity row; versions written by runs in
		// which the owning customer did not succeed.
		owner := "EXISTS (SELECT 1 FROM {S}.customer_syncs s WHERE s.run_id = h.run_id AND s.status = 'succeeded')"
		if h.customer != "" {
			owner = "EXISTS (SELECT 1 FROM {S}.customer_syncs s WHERE s.run_id = h.run_id AND s.customer_id = h." + h.customer + " AND s.status = 'succeeded')"
		}
		q = `
SELECT ` + strings.ReplaceAll(keyText, "|| ", "|| h.") + `, h.valid_from::text, h.change, coalesce(h.run_id::text, 'NULL'),
       NOT EXISTS (SELECT 1 FROM {S}.` + h.table + ` t WHERE ` + strings.Join(on, " AND ") + `) AS orphan
FROM {S}.` + h.history + ` h
WHERE NOT EXISTS (SELECT 1 FROM {S}.` + h.table + ` t WHERE ` + strings.Join(on, " AND ") + `)
   OR NOT ` + owner + `
ORDER BY 1, 2`
		w.eachRow(fail, q, func(r pgx.Rows) error {
			var k, from, change, run string
			var orphan bool
			if err := r.Scan(&k, &from, &change, &run, &orphan); err != nil {
				return err
			}
			if orphan {
				fail("%s (%s): history version from %s has no %s row", h.history, k, from, h.table)
			} else {
				fail("%s (%s): version from %s (%s) was written by run_id %s, in which its customer has no succeeded customer_syncs row", h.history, k, from, change, run)
			}
			return nil
		})
	}
	_ = ctx
}

func prefixedCols(p string, cols []string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = p + c
	}
	return strings.Join(out, ", ")
}

func (w *world) eachRow(fail failFunc, q string, fn func(pgx.Rows) error) {
	rows, err := w.query(w.t.Context(), q)
	if err != nil {
		fail("read the warehouse: %v\n%s", err, q)
		return
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			fail("read the warehouse: %v", err)
			return
		}
	}
	if err := rows.Err(); err != nil {
		fail("read the warehouse: %v", err)
	}
}

// wantCurrent checks that every customer's last successful sync saw the
// newest API version: the warehouse equals the current API exactly.
func wantCurrent(tb testing.TB, w *world) {
	tb.Helper()
	wantCurrentSince(tb, w, w.latest())
}

// wantCurrentSince is wantCurrent when the API has not changed since
// version first was taken (several credentials take one version each per
// round): every customer's last successful sync saw version first or a
// later one.
func wantCurrentSince(tb testing.TB, w *world, first int) {
	tb.Helper()
	db, ok := w.read(tb)
	if !ok {
		return
	}
	versionOfRun := map[int64]int{}
	for _, r := range w.runs {
		for _, id := range r.runIDs {
			versionOfRun[id] = r.version
		}
	}
	all := map[int64]bool{}
	for _, v := range w.versions[first:] {
		for _, c := range v.customers {
			all[c] = true
		}
	}
	for _, c := range slices.Sorted(maps.Keys(all)) {
		id, ok := db.lastOK[c]
		if v, known := versionOfRun[id]; !ok || !known || v < first {
			tb.Errorf("customer %d: last successful sync run_id %d saw API version %d, not the current one (%d or later)\n\t%s", c, id, versionOfRun[id], first, w.replay)
		}
	}
}

// ---- recording TB: proves the checker can fail ----

// recordingTB is a testing.TB whose Errorf records instead of failing.
type recordingTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }
func (r *recordingTB) Helper()           {}

func (r *recordingTB) has(parts ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		ok := true
		for _, p := range parts {
			if !strings.Contains(e, p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// ---- API changes between runs ----

// simIDs are the largest user and invitation ids apiChanges gave on one
// simulator, so that it never gives one twice (the simulator picks
// max(current)+1, which reuses the id of a user or invitation gone since).
type simIDs struct {
	mu               sync.Mutex
	user, invitation int64
}

var simIDsOf sync.Map // *msadstest.Server → *simIDs

func issuedIDs(sim *msadstest.Server) *simIDs {
	v, _ := simIDsOf.LoadOrStore(sim, &simIDs{})
	return v.(*simIDs)
}

// apiChanges makes a few random changes to the API, as happen between two
// syncs: users leave and join, roles change, emails change, invitations
// are accepted and sent. It never touches the signed-in user, and removes
// at most one user per customer (well under the removal guard).
func apiChanges(rng *rand.Rand, sim *msadstest.Server) []string {
	ds := sim.Dataset()
	principal := ds.PrincipalID()
	var log []string
	ids := issuedIDs(sim)
	ids.mu.Lock()
	defer ids.mu.Unlock()
	maxID := ids.user
	for _, u := range ds.Users {
		maxID = max(maxID, u.ID)
	}
	defer func() { ids.user = max(ids.user, maxID) }()
	accountsOf := func(c int64) []int64 {
		var ids []int64
		for _, a := range ds.Accounts {
			if a.CustomerID == c {
				ids = append(ids, a.ID)
			}
		}
		return ids
	}
	for _, c := range ds.CustomerIDs() {
		listed := slices.DeleteFunc(ds.ListedUserIDs(c), func(id int64) bool { return id == principal })
		switch rng.IntN(3) {
		case 0:
			if len(listed) > 4 {
				u := listed[rng.IntN(len(listed))]
				sim.RemoveUser(c, u)
				log = append(log, fmt.Sprintf("user %d leaves customer %d", u, c))
			}
		case 1:
			maxID += 1 + int64(rng.IntN(5))
			id := maxID
			now := time.Now().UTC().Truncate(time.Second)
			sim.AddUser(c, msads.User{ID: id, UserName: fmt.Sprintf("joiner%d@example.com", id), Email: fmt.Sprintf("joiner%d@example.com", id),
				FirstName: "New", LastName: "Joiner", Lcid: "EnglishUS", LifecycleStatus: "Active", LastModifiedTime: &now}, nil)
			log = append(log, fmt.Sprintf("user %d joins customer %d", id, c))
		}
		if len(listed) > 0 && rng.IntN(2) == 0 {
			u := listed[rng.IntN(len(listed))]
			acc := accountsOf(c)
			roles := []msads.Role{{CustomerID: c, RoleID: 16, AccountIDs: acc[:1+rng.IntN(len(acc))]}}
			if rng.IntN(2) == 0 {
				roles = []msads.Role{{CustomerID: c, RoleID: 41}}
			}
			// Keep its roles in other customers.
			for _, r := range ds.Roles {
				if r.UserID == u && r.CustomerID != c {
					roles = append(roles, msads.Role{CustomerID: r.CustomerID, RoleID: r.RoleID, AccountIDs: r.AccountIDs,
						LinkedAccountIDs: r.LinkedAccountIDs, CustomerLinkPermission: r.CustomerLinkPermission})
				}
			}
			sim.SetRoles(u, roles)
			log = append(log, fmt.Sprintf("user %d's roles in customer %d change", u, c))
		}
		if len(listed) > 0 && rng.IntN(3) == 0 {
			u := listed[rng.IntN(len(listed))]
			email := fmt.Sprintf("changed%d.%d@example.com", u, rng.IntN(1000))
			sim.UpdateUser(u, func(x *msads.User) { x.Email = email })
			log = append(log, fmt.Sprintf("user %d's email changes", u))
		}
		var invs []int64
		for _, inv := range ds.Invitations {
			if inv.CustomerID == c {
				invs = append(invs, inv.ID)
			}
		}
		if len(invs) > 0 && rng.IntN(2) == 0 {
			i := invs[rng.IntN(len(invs))]
			if id := sim.AcceptInvitation(i); id != 0 {
				maxID = max(maxID, id)
				log = append(log, fmt.Sprintf("invitation %d accepted (user %d joins customer %d)", i, id, c))
			}
		}
		if rng.IntN(2) == 0 {
			// A fresh id: the simulator would give max(pending)+1, the id
			// of an invitation accepted meanwhile, to a new invitation in
			// any customer (the real API never reuses one; the warehouse
			// keys invitations by id alone).
			next := ids.invitation + 1
			for _, inv := range sim.Dataset().Invitations {
				next = max(next, inv.ID+1)
			}
			if ids.invitation == 0 {
				next = 0 // the simulator's first id
			}
			id := sim.AddInvitation(msads.Invitation{ID: next, CustomerID: c, Email: fmt.Sprintf("invitee%d@example.com", rng.IntN(1_000_000)),
				FirstName: "Invited", LastName: "Person", RoleID: msads.RoleStandardUser, Lcid: "EnglishUS"})
			ids.invitation = max(ids.invitation, id)
			log = append(log, fmt.Sprintf("invitation %d sent in customer %d", id, c))
		}
	}
	return log
}

// TestInvariantCheckerCatchesCorruption proves the checker can fail: each
// corruption of a correct warehouse must be reported, naming the customer
// or key and what differs.
func TestInvariantCheckerCatchesCorruption(t *testing.T) {
	t.Parallel()
	_, replay := caseSeed(t)
	rng := rand.New(rand.NewPCG(31, 11)) // fixed: the corruptions need known rows
	e := newEnvSync(t, msadstest.Generate(31, 3, 10), suiteSync, "")
	w := newWorld(t, e, replay)
	if r := w.run("first"); r.code != 0 {
		t.Fatalf("first run: exit %d: %s", r.code, r.stderr)
	}
	// A second run with changes (so history has several versions per key
	// and rows marked removed) and one customer failing (a partial run).
	ids := e.ds.CustomerIDs()
	bad := ids[2]
	for c := range 2 {
		listed := e.sim.Dataset().ListedUserIDs(ids[c])
		u := listed[len(listed)-1]
		e.sim.UpdateUser(u, func(x *msads.User) { x.Email = fmt.Sprintf("new.address%d@example.com", u) })
		e.sim.RemoveUser(ids[c], listed[len(listed)-2])
	}
	apiChanges(rng, e.sim)
	e.sim.AddInvitation(msads.Invitation{CustomerID: ids[0], Email: "kept.invitee@example.com", RoleID: msads.RoleViewer, AccountIDs: []int64{}})
	e.sim.SetFault(msadstest.OpSearchUserInvitations, msadstest.Fault{CustomerID: bad, Code: 106})
	if r := w.run("partial"); r.code != 2 {
		t.Fatalf("second run: exit %d, want 2: %s", r.code, r.stderr)
	}
	e.sim.ClearFaults()
	if n := checkInvariants(t, w); n != 0 {
		t.Fatalf("%d violations on a correct warehouse", n)
	}
	good := ids[0]
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := e.pool.Exec(t.Context(), w.sql(q), args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	one := func(q string, args ...any) (a, b int64) {
		t.Helper()
		if err := e.pool.QueryRow(t.Context(), w.sql(q), args...).Scan(&a, &b); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return a, b
	}
	_, user := one(`SELECT customer_id, user_id FROM {S}.users WHERE customer_id = $1 AND removed_at IS NULL ORDER BY user_id LIMIT 1`, good)
	_, changed := one(`SELECT customer_id, user_id FROM {S}.users_history WHERE customer_id = $1 GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 2 LIMIT 1`, good)
	_, gone := one(`SELECT customer_id, user_id FROM {S}.users WHERE customer_id = $1 AND removed_at IS NOT NULL ORDER BY user_id LIMIT 1`, good)
	_, inv := one(`SELECT customer_id, invitation_id FROM {S}.user_invitations WHERE customer_id = $1 AND removed_at IS NULL ORDER BY 2 LIMIT 1`, good)
	roleUser, roleCust := one(`SELECT user_id, customer_id FROM {S}.user_roles WHERE removed_at IS NULL AND customer_id = $1 ORDER BY 1 LIMIT 1`, good)
	partialRun, _ := one(`SELECT run_id, 0 FROM {S}.sync_runs WHERE status = 'partial'`)

	cases := []struct {
		name          string
		corrupt, undo string
		args          []any
		want          [][]string // each: parts one reported error must contain
	}{
		{"email changed", `UPDATE {S}.users SET email = 'x' WHERE customer_id = $1 AND user_id = $2`,
			`UPDATE {S}.users u SET email = h.email FROM {S}.users_history h WHERE h.customer_id = u.customer_id AND h.user_id = u.user_id AND h.valid_to IS NULL AND u.customer_id = $1 AND u.user_id = $2`,
			[]any{good, user}, [][]string{{fmt.Sprint("customer ", good), fmt.Sprint("user ", user), `email "x"`}, {"users (customer_id=", fmt.Sprint("user_id=", user), "differs from its last history version"}}},
		{"listed user marked removed", `UPDATE {S}.users SET removed_at = now() WHERE customer_id = $1 AND user_id = $2`,
			`UPDATE {S}.users SET removed_at = NULL WHERE customer_id = $1 AND user_id = $2`,
			[]any{good, user}, [][]string{{fmt.Sprint("customer ", good), fmt.Sprint("user ", user), "marked removed but API version 1 lists it"}, {"removed but its last history change is \"added\""}}},
		{"removed user back: a mix of two versions", `UPDATE {S}.users SET removed_at = NULL WHERE customer_id = $1 AND user_id = $2`,
			`UPDATE {S}.users SET removed_at = now() WHERE customer_id = $1 AND user_id = $2`,
			[]any{good, gone}, [][]string{{fmt.Sprint("customer ", good), fmt.Sprint("user ", gone), "the API does not list it"}, {fmt.Sprint("customer ", good), "match no API version: a mix"}}},
		{"history interval closed early", `UPDATE {S}.users_history SET valid_to = valid_from + interval '1 ms' WHERE customer_id = $1 AND user_id = $2 AND valid_to IS NULL`,
			`UPDATE {S}.users_history SET valid_to = NULL WHERE customer_id = $1 AND user_id = $2 AND valid_from = (SELECT max(valid_from) FROM {S}.users_history WHERE customer_id = $1 AND user_id = $2)`,
			[]any{good, user}, [][]string{{"users_history", fmt.Sprint("user_id=", user), "the last interval is closed"}, {"users (customer_id=", "its last history interval is closed"}}},
		{"gap between two versions", `UPDATE {S}.users_history SET valid_to = valid_to - interval '1 ms' WHERE customer_id = $1 AND user_id = $2 AND valid_to IS NOT NULL`,
			`UPDATE {S}.users_history SET valid_to = valid_to + interval '1 ms' WHERE customer_id = $1 AND user_id = $2 AND valid_to IS NOT NULL`,
			[]any{good, changed}, [][]string{{"users_history", fmt.Sprint("user_id=", changed), "gap"}}},
		{"overlapping versions", `UPDATE {S}.users_history SET valid_to = valid_to + interval '1 ms' WHERE customer_id = $1 AND user_id = $2 AND valid_to IS NOT NULL`,
			`UPDATE {S}.users_history SET valid_to = valid_to - interval '1 ms' WHERE customer_id = $1 AND user_id = $2 AND valid_to IS NOT NULL`,
			[]any{good, changed}, [][]string{{"users_history", fmt.Sprint("user_id=", changed), "overlap"}}},
		{"listed invitation marked removed", `UPDATE {S}.user_invitations SET removed_at = now() WHERE invitation_id = $1`,
			`UPDATE {S}.user_invitations SET removed_at = NULL WHERE invitation_id = $1`,
			[]any{inv}, [][]string{{fmt.Sprint("customer ", good), fmt.Sprint("invitation ", inv), "marked removed"}}},
		{"role scope changed", `UPDATE {S}.user_roles SET account_ids = '{1}' WHERE user_id = $1 AND customer_id = $2`,
			`UPDATE {S}.user_roles r SET account_ids = h.account_ids FROM {S}.user_roles_history h WHERE h.user_id = r.user_id AND h.customer_id = r.customer_id AND h.role_id = r.role_id AND h.valid_to IS NULL AND r.user_id = $1 AND r.customer_id = $2`,
			[]any{roleUser, roleCust}, [][]string{{fmt.Sprint("user ", roleUser), fmt.Sprint("customer ", roleCust), "account_ids {1}"}}},
		{"partial run recorded as succeeded", `UPDATE {S}.sync_runs SET status = 'succeeded' WHERE run_id = $1`,
			`UPDATE {S}.sync_runs SET status = 'partial' WHERE run_id = $1`,
			[]any{partialRun}, [][]string{{fmt.Sprint("run_id ", partialRun), "exit 2 but status \"succeeded\""}}},
		{"customers_failed wrong", `UPDATE {S}.sync_runs SET customers_failed = 0 WHERE run_id = $1`,
			`UPDATE {S}.sync_runs SET customers_failed = 1 WHERE run_id = $1`,
			[]any{partialRun}, [][]string{{fmt.Sprint("run_id ", partialRun), "customers_failed = 0"}}},
		{"failed customer's rows overwritten", `UPDATE {S}.user_invitations SET removed_at = now() WHERE customer_id = $1`,
			`UPDATE {S}.user_invitations SET removed_at = NULL WHERE customer_id = $1`,
			[]any{bad}, [][]string{{fmt.Sprint("customer ", bad), "marked removed but API version 0 lists it"}}},
	}
	for _, c := range cases {
		exec(c.corrupt, c.args...)
		rec := &recordingTB{TB: t}
		n := checkInvariants(rec, w)
		exec(c.undo, c.args...)
		if n == 0 {
			t.Errorf("%s: the checker reported nothing", c.name)
			continue
		}
		for _, parts := range c.want {
			if !rec.has(parts...) {
				t.Errorf("%s: no error containing %q; got:\n%s", c.name, parts, strings.Join(rec.errs, "\n"))
			}
		}
		if !rec.has("replay: SYNCER_SEED=") {
			t.Errorf("%s: the errors do not say how to replay", c.name)
		}
		t.Logf("%s: %d violations reported, e.g. %s", c.name, n, strings.SplitN(rec.errs[0], "\n", 2)[0])
	}
	if n := checkInvariants(t, w); n != 0 {
		t.Errorf("%d violations after undoing every corruption", n)
	}
	// A run whose exit code lies: recorded as exit 0 though it was partial.
	w.runs[1].results[0].code = 0
	rec := &recordingTB{TB: t}
	checkInvariants(rec, w)
	w.runs[1].results[0].code = 2
	if !rec.has("exit 0 but status \"partial\"") {
		t.Errorf("a lying exit code is not reported; got:\n%s", strings.Join(rec.errs, "\n"))
	}
	// The rotated-then-crash case's detector of a kill between rotation
	// and save.
	if grantWindow(t, w) {
		t.Error("grantWindow: true while the stored token is the latest")
	}
	e.sim.IssueRefreshToken()
	if !grantWindow(t, w) {
		t.Error("grantWindow: false while the token endpoint issued a newer token")
	}
}
