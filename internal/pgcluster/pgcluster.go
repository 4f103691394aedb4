// Package pgcluster starts a throwaway PostgreSQL cluster: initdb into a
// temporary folder (a copy of a template initdb made once and kept beside
// the clusters), pg_ctl start on a free TCP port of 127.0.0.1 (and a unix
// socket in the folder), trust authentication, fsync off. Tests use it through
// pgtest, and `syncer demo` uses it directly.
//
// PostgreSQL refuses to run as root, so when the process runs as root the
// server programs run as the "postgres" system user, in folders it owns.
package pgcluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoInitdb is returned by Start when no PostgreSQL installation is found.
var ErrNoInitdb = errors.New("initdb not found: install PostgreSQL (apt-get install postgresql) or set TEST_DATABASE_URL")

// Cluster is a running throwaway cluster.
type Cluster struct {
	dir     string // temporary folder, removed by Stop
	dataDir string
	logFile string
	bin     string // folder holding initdb, pg_ctl
	port    int
	cred    *syscall.Credential // nil unless running as root
	logger  *slog.Logger
}

// Start creates and starts a cluster. Stop it with Stop.
func Start(ctx context.Context, logger *slog.Logger) (*Cluster, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	parent, err := parentDir()
	if err != nil {
		return nil, err
	}
	// Orphans may be in either folder: an earlier run may have chosen the
	// other (PGCLUSTER_RAM set or not, /dev/shm fuller or emptier).
	reapOrphans(parent, bin, logger)
	if parent == ramDir {
		reapOrphans("", bin, logger)
	} else if _, err := os.Stat(ramDir); err == nil {
		reapOrphans(ramDir, bin, logger)
	}
	dir, err := os.MkdirTemp(parent, "syncer-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	c := &Cluster{
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logFile: filepath.Join(dir, "server.log"),
		bin:     bin,
		logger:  logger,
	}
	if err := c.start(ctx); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	logger.InfoContext(ctx, "started throwaway PostgreSQL", slog.String("dir", dir), slog.Int("port", c.port))
	return c, nil
}

// EnvRAM, set to 1, makes Start put clusters in a RAM file system when
// there is one with room (see parentDir). `make test` sets it; the
// benchmarks and `syncer demo` run on disk, as a warehouse does.
const EnvRAM = "PGCLUSTER_RAM"

// ramDir is where clusters go under EnvRAM when it is a tmpfs with
// ramDirMinFree bytes free.
var (
	ramDir        = "/dev/shm"
	ramDirMinFree = uint64(4 << 30)
)

// parentDir returns the folder clusters (and their template) are made in:
// with EnvRAM=1, ramDir when it is a tmpfs with room; else the temp dir.
// A throwaway test cluster runs with fsync off and is deleted at Stop, so
// a disk keeps nothing for it but costs it: on the ext4 root of the test
// machines, creating a relation's files took ~7% of the server's CPU in
// the e2e suite (the inode allocator's search past recently deleted
// inodes), and `make test` ran 58-66 s of CPU with its clusters in
// /dev/shm against 72-85 s in /tmp (runs alternated). Docker's default
// 64 MB /dev/shm is too small and is passed over.
//
// When running as root the server runs as "postgres", which must reach
// the folder; a private TMPDIR (say under /root) would not do, so /tmp
// is used instead.
func parentDir() (string, error) {
	if os.Getenv(EnvRAM) == "1" && tmpfsFree(ramDir) >= ramDirMinFree && writable(ramDir) && traversable(ramDir) {
		return ramDir, nil
	}
	if os.Geteuid() != 0 || traversable(os.TempDir()) {
		return "", nil // os.MkdirTemp's default: the temp dir
	}
	if !traversable("/tmp") {
		return "", fmt.Errorf("pgcluster: neither %s nor /tmp can be traversed by the postgres user; set TMPDIR to a folder it can reach", os.TempDir())
	}
	return "/tmp", nil
}

// writable reports whether this process can create files in dir.
func writable(dir string) bool {
	f, err := os.CreateTemp(dir, ".syncer-pg-probe-")
	if err != nil {
		return false
	}
	_ = f.Close()
	_ = os.Remove(f.Name())
	return true
}

// ownerFile holds the pid of the process that started a cluster.
const ownerFile = "owner.pid"

// reapOrphans stops and removes the clusters left behind in parent (or the
// temp dir) by processes that died without calling Stop: a test binary
// killed by its timeout, an interrupted demo. A cluster whose owner is alive
// is never touched.
func reapOrphans(parent, bin string, logger *slog.Logger) {
	if parent == "" {
		parent = os.TempDir()
	}
	dirs, _ := filepath.Glob(filepath.Join(parent, "syncer-pg-*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours, or still being created
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		o := &Cluster{dir: dir, dataDir: filepath.Join(dir, "data"), bin: bin}
		if os.Geteuid() == 0 {
			o.cred, _ = postgresCredential()
		}
		if err := o.Stop(); err != nil {
			logger.Warn("could not remove an orphaned throwaway cluster", slog.String("dir", dir), slog.Any("error", err))
			continue
		}
		logger.Info("removed an orphaned throwaway cluster", slog.String("dir", dir), slog.Int("owner_pid", pid))
	}
}

// processAlive reports whether a process with this pid exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func (c *Cluster) start(ctx context.Context) error {
	// The folder must be traversable by the server user.
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if os.Geteuid() == 0 {
		cred, err := postgresCredential()
		if err != nil {
			return err
		}
		c.cred = cred
		if err := os.Chown(c.dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("pgcluster: chown %s: %w", c.dir, err)
		}
	}
	if err := c.initData(ctx); err != nil {
		return err
	}
	conf := strings.Join([]string{
		"",
		"# added by pgcluster",
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = '" + c.dir + "'",
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
		"shared_buffers = 128MB",
		"max_connections = 300", // every test package of `make test` shares one cluster
		"log_min_messages = warning",
		"",
	}, "\n")
	f, err := os.OpenFile(filepath.Join(c.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgcluster: write postgresql.conf: %w", err)
	}

	// A free port can be taken between our probe and the server's bind, so
	// try a few.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("pgcluster: find a free port: %w", err)
		}
		c.port = port
		out, err := c.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", c.dataDir, "-l", c.logFile,
			"-o", "-p "+strconv.Itoa(port))
		if err == nil {
			return nil
		}
		lastErr = fmt.Errorf("pgcluster: pg_ctl start: %w\n%s\nserver log:\n%s", err, tail(out, 10), c.logTail(20))
		if ctx.Err() != nil {
			break
		}
	}
	return lastErr
}

// initdbArgs are the options of every cluster's initdb (after -D).
var initdbArgs = []string{"-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"}

// initData fills c.dataDir with a fresh cluster: a copy of the template
// (see template), or initdb when there is none to be had.
func (c *Cluster) initData(ctx context.Context) error {
	if tmpl, err := c.template(ctx); err == nil {
		out, err := exec.CommandContext(ctx, "cp", "-a", tmpl, c.dataDir).CombinedOutput()
		if err == nil {
			return nil
		}
		c.logger.WarnContext(ctx, "could not copy the cluster template; running initdb", slog.String("template", tmpl),
			slog.Any("error", err), slog.String("output", tail(out, 5)))
		_ = os.RemoveAll(c.dataDir)
	} else {
		c.logger.DebugContext(ctx, "no cluster template; running initdb", slog.Any("error", err))
	}
	out, err := c.run(ctx, "initdb", append([]string{"-D", c.dataDir}, initdbArgs...)...)
	if err != nil {
		return fmt.Errorf("pgcluster: initdb: %w\n%s", err, tail(out, 20))
	}
	return nil
}

// template returns the data folder of a cluster initdb made once for this
// PostgreSQL installation and these options, and never started: copying
// it (tens of milliseconds) replaces an initdb (about a second of CPU and
// 2–3 s of wall time) for every later cluster, in this process and the
// next ones (`make test` starts one per package that needs a cluster of
// its own, and one shared). It lives beside the clusters, named after a
// hash of the installation's initdb (path, size, time) and the options,
// so an upgrade or an option change makes a new one. Two processes that
// make it at once each initdb into a folder of their own and rename it
// into place; the loser uses the winner's.
func (c *Cluster) template(ctx context.Context) (string, error) {
	initdb := filepath.Join(c.bin, "initdb")
	fi, err := os.Stat(initdb)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(fmt.Sprint(initdb, fi.Size(), fi.ModTime().UnixNano(), os.Geteuid(), initdbArgs)))
	final := filepath.Join(filepath.Dir(c.dir), "syncer-pgtemplate-"+hex.EncodeToString(h[:8]))
	data := filepath.Join(final, "data")
	if _, err := os.Stat(filepath.Join(final, templateDone)); err == nil {
		return data, nil
	}
	// initdb as the server user (see start) in a folder of the cluster's
	// kind, then renamed into place with the mark that it is complete.
	tmp, err := os.MkdirTemp(filepath.Dir(c.dir), "syncer-pgtemplate-new-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if c.cred != nil {
		if err := os.Chown(tmp, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return "", err
		}
	}
	b := &Cluster{dir: tmp, bin: c.bin, cred: c.cred}
	if out, err := b.run(ctx, "initdb", append([]string{"-D", filepath.Join(tmp, "data")}, initdbArgs...)...); err != nil {
		return "", fmt.Errorf("pgcluster: initdb: %w\n%s", err, tail(out, 20))
	}
	if err := os.WriteFile(filepath.Join(tmp, templateDone), nil, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, serr := os.Stat(filepath.Join(final, templateDone)); serr == nil {
			return data, nil // another process made it meanwhile
		}
		return "", err
	}
	return data, nil
}

// templateDone marks a complete template folder.
const templateDone = "complete"

// URL returns a pgx URL for the cluster's "postgres" database over TCP.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Port returns the TCP port the server listens on.
func (c *Cluster) Port() int { return c.port }

// Dir returns the temporary folder (data, socket, log).
func (c *Cluster) Dir() string { return c.dir }

// Keep hands the running cluster over to the user: it is never reaped as an
// orphan, and it goes on after the process exits. It returns the command
// that stops and removes it.
func (c *Cluster) Keep() (stopCommand string, err error) {
	if err := os.Remove(filepath.Join(c.dir, ownerFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("pgcluster: keep: %w", err)
	}
	ctl := filepath.Join(c.bin, "pg_ctl") + " stop -D " + c.dataDir
	if c.cred != nil {
		ctl = "su postgres -s /bin/sh -c '" + ctl + "'"
	}
	return ctl + " && rm -rf " + c.dir, nil
}

// Stop stops the server (fast shutdown) and removes its folder.
func (c *Cluster) Stop() error {
	var errs []error
	if _, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); err == nil {
		out, err := c.run(context.Background(), "pg_ctl", "stop", "-w", "-m", "fast", "-D", c.dataDir)
		if err != nil {
			errs = append(errs, fmt.Errorf("pgcluster: pg_ctl stop: %w\n%s", err, tail(out, 10)))
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("pgcluster: %w", err))
	}
	return errors.Join(errs...)
}

func (c *Cluster) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, prog), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	// pg_ctl start leaves the server running with our pipes otherwise.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return buf.Bytes(), err
}

func (c *Cluster) logTail(n int) string {
	b, err := os.ReadFile(c.logFile)
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	return tail(b, n)
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// findBin returns the folder holding initdb and pg_ctl: from PATH, else the
// newest /usr/lib/postgresql/*/bin.
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	slices.SortFunc(matches, func(a, b string) int {
		return versionOf(b) - versionOf(a) // newest first
	})
	for _, m := range matches {
		return filepath.Dir(m), nil
	}
	return "", ErrNoInitdb
}

func versionOf(initdbPath string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdbPath))))
	return v
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: running as root and no \"postgres\" system user to run PostgreSQL as (PostgreSQL refuses to run as root): %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("pgcluster: postgres user ids: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// traversable reports whether every folder from / to dir can be traversed
// by other users (o+x).
func traversable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		up := filepath.Dir(dir)
		if up == dir {
			return true
		}
		dir = up
	}
}

func freePort() (int, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StopServer stops the server (fast shutdown: sessions are terminated)
// without removing its data; StartServer starts it again on the same port.
// Tests simulate an outage with them.
func (c *Cluster) StopServer(ctx context.Context) error {
	out, err := c.run(ctx, "pg_ctl", "stop", "-w", "-m", "fast", "-D", c.dataDir)
	if err != nil {
		return fmt.Errorf("pgcluster: pg_ctl stop: %w\n%s", err, tail(out, 10))
	}
	return nil
}

// StartServer starts a server stopped by StopServer, on the same port.
func (c *Cluster) StartServer(ctx context.Context) error {
	out, err := c.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", c.dataDir, "-l", c.logFile,
		"-o", "-p "+strconv.Itoa(c.port))
	if err != nil {
		return fmt.Errorf("pgcluster: pg_ctl start: %w\n%s\nserver log:\n%s", err, tail(out, 10), c.logTail(20))
	}
	return nil
}
