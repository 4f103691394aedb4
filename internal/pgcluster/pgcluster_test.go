package pgcluster

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestFindBin(t *testing.T) {
	t.Setenv("PATH", "/nonexistent")
	dir, err := findBin()
	if err != nil {
		if !errors.Is(err, ErrNoInitdb) {
			t.Fatalf("findBin error = %v, want ErrNoInitdb", err)
		}
		return
	}
	if _, err := os.Stat(dir + "/initdb"); err != nil {
		t.Errorf("findBin = %s without initdb: %v", dir, err)
	}
}

func TestTraversable(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "traversable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	private := dir + "/private"
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if !traversable("/tmp") {
		t.Skip("/tmp is not traversable here")
	}
	if !traversable(dir) {
		t.Errorf("traversable(%s) = false, want true", dir)
	}
	if traversable(private + "/x") {
		t.Errorf("traversable under a 0700 folder = true, want false")
	}
}

// TestStartReapsOrphansAndStops starts a cluster, orphans it (its owner
// pid becomes a process that has exited), and starts another: that Start
// stops and removes the orphan and leaves alone a cluster folder whose owner
// lives (this process). The second cluster then serves the plain checks:
// it answers, runs with fsync off, and Stop removes its folder.
func TestStartReapsOrphansAndStops(t *testing.T) {
	if _, err := findBin(); err != nil {
		t.Skip("no PostgreSQL installed")
	}
	ctx := context.Background()
	orphan, err := Start(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = orphan.Stop() })
	// A cluster of a live owner: the reaper reads only its owner.pid, so
	// a folder with this process's pid stands for a running one.
	live, err := os.MkdirTemp(filepath.Dir(orphan.Dir()), "syncer-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(live) })
	if err := os.WriteFile(filepath.Join(live, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}

	// Make the first cluster's owner a process that has exited.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(orphan.Dir(), ownerFile), []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}

	c, err := Start(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	if _, err := os.Stat(orphan.Dir()); !os.IsNotExist(err) {
		t.Errorf("orphaned cluster %s not removed (stat: %v)", orphan.Dir(), err)
	}
	if conn, err := pgx.Connect(ctx, orphan.URL()+"&connect_timeout=2"); err == nil {
		_ = conn.Close(ctx)
		t.Error("orphaned cluster still accepts connections")
	}
	if _, err := os.Stat(filepath.Join(live, ownerFile)); err != nil {
		t.Errorf("the folder of a cluster whose owner lives was touched: %v", err)
	}

	dir := c.Dir()
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Errorf("SELECT 1 = %d, %v", one, err)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "off" {
		t.Errorf("fsync = %q, %v; want off", fsync, err)
	}
	_ = conn.Close(ctx)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("folder %s still exists after Stop (stat: %v)", dir, err)
	}
}

// parentDir takes the RAM folder only when asked (PGCLUSTER_RAM=1) and
// only when it is a tmpfs with room; otherwise the temp dir.
func TestParentDirRAMOnlyWhenAskedAndRoomy(t *testing.T) {
	if tmpfsFree("/dev/shm") == 0 {
		t.Skip("no tmpfs at /dev/shm")
	}
	defer func(d string, n uint64) { ramDir, ramDirMinFree = d, n }(ramDir, ramDirMinFree)
	ramDir, ramDirMinFree = "/dev/shm", 1<<20
	onDisk := func() string {
		t.Helper()
		if os.Geteuid() == 0 && !traversable(os.TempDir()) {
			return "/tmp"
		}
		return ""
	}
	for _, c := range []struct {
		name, env, ramDir string
		minFree           uint64
		want              string
	}{
		{"not asked", "", "/dev/shm", 1 << 20, onDisk()},
		{"asked, tmpfs with room", "1", "/dev/shm", 1 << 20, "/dev/shm"},
		{"asked, tmpfs without room", "1", "/dev/shm", 1 << 62, onDisk()},
		{"asked, not a tmpfs", "1", t.TempDir(), 1 << 20, onDisk()},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "asked, not a tmpfs" {
				if tmpfsFree(c.ramDir) > 0 {
					t.Skip("the temp dir is a tmpfs too")
				}
			}
			t.Setenv(EnvRAM, c.env)
			ramDir, ramDirMinFree = c.ramDir, c.minFree
			got, err := parentDir()
			if err != nil || got != c.want {
				t.Errorf("parentDir() = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}
