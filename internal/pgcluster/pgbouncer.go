package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoPgBouncer is returned by StartPgBouncer when the pgbouncer program is
// not installed (Debian's pgbouncer package; scripts/ensure-postgres.sh
// installs it).
var ErrNoPgBouncer = errors.New("pgbouncer not found: install it (apt-get install pgbouncer, or scripts/ensure-postgres.sh)")

// PgBouncerPath returns the pgbouncer program, or ErrNoPgBouncer.
func PgBouncerPath() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", ErrNoPgBouncer
}

// PgBouncer is a running pgbouncer in transaction pooling mode in front of a
// throwaway cluster.
type PgBouncer struct {
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// StartPgBouncer starts pgbouncer (as the postgres user when running as
// root) in a temporary folder, on a free port of 127.0.0.1, with
// pool_mode=transaction, trust authentication, and the cluster as every
// database. Stop it with Stop.
func StartPgBouncer(ctx context.Context, c *Cluster) (*PgBouncer, error) {
	bin, err := PgBouncerPath()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(c.dir), "syncer-pgbouncer-")
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pgbouncer: %w", err)
	}
	if c.cred != nil {
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgbouncer: %w", err)
		}
	}
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("pgbouncer: %w", err)
		}
		b := &PgBouncer{dir: dir, port: port, done: make(chan struct{})}
		if err := b.start(ctx, bin, c); err != nil {
			lastErr = err
			continue
		}
		return b, nil
	}
	_ = os.RemoveAll(dir)
	return nil, lastErr
}

func (b *PgBouncer) start(ctx context.Context, bin string, c *Cluster) error {
	userlist := filepath.Join(b.dir, "userlist.txt")
	if err := os.WriteFile(userlist, []byte(`"postgres" ""`+"\n"), 0o644); err != nil {
		return fmt.Errorf("pgbouncer: %w", err)
	}
	ini := strings.Join([]string{
		"[databases]",
		"* = host=127.0.0.1 port=" + strconv.Itoa(c.port),
		"[pgbouncer]",
		"listen_addr = 127.0.0.1",
		"listen_port = " + strconv.Itoa(b.port),
		"unix_socket_dir =",
		"auth_type = trust",
		"auth_file = " + userlist,
		"pool_mode = transaction",
		"max_client_conn = 200",
		"default_pool_size = 20",
		"server_reset_query =",
		// The syncer's pool sets these at startup; behind PgBouncer set
		// them on the role instead (ALTER ROLE ... SET).
		"ignore_startup_parameters = extra_float_digits,statement_timeout,idle_in_transaction_session_timeout",
		"logfile = " + filepath.Join(b.dir, "pgbouncer.log"),
		"",
	}, "\n")
	conf := filepath.Join(b.dir, "pgbouncer.ini")
	if err := os.WriteFile(conf, []byte(ini), 0o644); err != nil {
		return fmt.Errorf("pgbouncer: %w", err)
	}
	cmd := exec.CommandContext(context.WithoutCancel(ctx), bin, conf) // runs until Stop, not until ctx ends
	cmd.Dir = b.dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgbouncer: start: %w", err)
	}
	b.cmd = cmd
	go func() { _ = cmd.Wait(); close(b.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-b.done:
			return fmt.Errorf("pgbouncer exited at start:\n%s", b.logTail())
		case <-ctx.Done():
			b.Stop()
			return ctx.Err()
		default:
		}
		conn, err := (&net.Dialer{Timeout: 200 * time.Millisecond}).DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(b.port))
		if err == nil {
			_ = conn.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Stop()
	return fmt.Errorf("pgbouncer did not listen within 10s:\n%s", b.logTail())
}

func (b *PgBouncer) logTail() string {
	out, err := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
	if err != nil {
		return "(no log)"
	}
	return tail(out, 10)
}

// URL returns a pgx URL for the "postgres" database through pgbouncer. It
// uses default_query_exec_mode=exec: PgBouncer before 1.21 (Debian 12 ships
// 1.18) cannot keep named prepared statements in transaction mode.
func (b *PgBouncer) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&default_query_exec_mode=exec", b.port)
}

// Stop stops pgbouncer and removes its folder.
func (b *PgBouncer) Stop() {
	if b.cmd != nil && b.cmd.Process != nil {
		_ = b.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-b.done:
		case <-time.After(5 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.done
		}
	}
	_ = os.RemoveAll(b.dir)
}
