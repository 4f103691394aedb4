// Command runtests is `go test` for `make test` without the relinking: it
// builds every package's test binary with `go test -c -o <dir>/`, which
// links a binary again only when its package or a dependency changed, and
// runs the binaries itself, each in its package's folder as go test does.
// `go test` links every test binary on every run (about 11 s of CPU for
// this tree's 20 race-detector binaries on a 2-core machine); here an
// unchanged tree links none. Alone that was within the machine's noise
// (the packages then start sooner and load the shared server more);
// with the clusters in RAM (pgcluster's PGCLUSTER_RAM) `make test` took
// 10-25% less time than before (BENCHMARKS.md, "Eighth session").
//
// Binaries run -p at a time, the one that took longest last time first
// (durations kept beside the binaries), so the long e2e package starts at
// once and the short ones fill the other slots. The output is go test's:
// "ok  <package> <time>" per package, and the whole output of a package
// that failed, then "FAIL <package>". The exit status is 1 when a package
// failed, 2 when the build failed.
//
//	go run ./scripts/runtests -race -parallel 6 -timeout 20m ./...
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"
)

func main() {
	// The binaries get the terminal's signals and end; runtests outlives
	// them to report. Notify, not Ignore: an ignored signal stays ignored
	// in the programs a process starts, and the binaries must stop on
	// Ctrl-C.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGINT, syscall.SIGTERM)
	os.Exit(run(os.Args[1:], os.Stdout))
}

// pkg is one package with tests.
type pkg struct {
	ImportPath string
	Dir        string
	Bin        string // its test binary (binaryName)
}

func run(args []string, stdout io.Writer) int {
	fs := flag.NewFlagSet("runtests", flag.ContinueOnError)
	var (
		p        = fs.Int("p", runtime.GOMAXPROCS(0), "test binaries run at once")
		race     = fs.Bool("race", false, "build with the race detector")
		ldflags  = fs.String("ldflags", "-w", "linker flags of the test binaries")
		parallel = fs.Int("parallel", 0, "-test.parallel of each binary (0: its default)")
		timeout  = fs.Duration("timeout", 10*time.Minute, "-test.timeout of each binary")
		runRE    = fs.String("run", "", "-test.run of each binary")
		verbose  = fs.Bool("v", false, "print every package's output (-test.v)")
		binDir   = fs.String("bin", "bin/test", "folder of the test binaries and their durations")
		goCmd    = fs.String("go", "go", "the go command")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	patterns := fs.Args()
	if len(patterns) == 0 {
		patterns = []string{"."}
	}
	ctx := context.Background()

	pkgs, err := list(ctx, *goCmd, patterns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtests:", err)
		return 2
	}
	// A folder per build flag set: a run with other flags must not relink
	// (say, without the race detector) the binaries this one runs.
	flavor := "plain"
	if *race {
		flavor = "race"
	}
	dir, err := filepath.Abs(filepath.Join(*binDir, flavor))
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtests:", err)
		return 2
	}
	build := []string{"test", "-c", "-o", dir + string(filepath.Separator), "-vet=off", "-ldflags=" + *ldflags}
	if *race {
		build = append(build, "-race")
	}
	cmd := exec.CommandContext(ctx, *goCmd, append(build, patterns...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "runtests: build:", err)
		return 2
	}
	for i := range pkgs {
		pkgs[i].Bin = filepath.Join(dir, binaryName(pkgs[i].ImportPath))
	}

	testArgs := []string{"-test.paniconexit0", "-test.count=1", "-test.timeout=" + timeout.String()}
	if *parallel > 0 {
		testArgs = append(testArgs, fmt.Sprintf("-test.parallel=%d", *parallel))
	}
	if *runRE != "" {
		testArgs = append(testArgs, "-test.run="+*runRE)
	}
	if *verbose {
		testArgs = append(testArgs, "-test.v=true")
	}

	if *race && os.Getenv("GORACE") == "" {
		// The race runtime sleeps 1 s before a binary exits (for leaked
		// goroutines to race): 20-odd packages, mostly run one after the
		// other beside the long e2e package, paid it in turn.
		_ = os.Setenv("GORACE", "atexit_sleep_ms=100")
	}

	histFile := filepath.Join(dir, "durations.json")
	hist := readDurations(histFile)
	// Longest first; a package never timed first of all (it may be long).
	slices.SortStableFunc(pkgs, func(a, b pkg) int {
		da, oka := hist[a.ImportPath]
		db, okb := hist[b.ImportPath]
		if oka != okb {
			if !oka {
				return -1
			}
			return 1
		}
		return cmp.Compare(db, da)
	})

	var (
		mu     sync.Mutex
		failed bool
		wg     sync.WaitGroup
		slots  = make(chan struct{}, max(*p, 1))
	)
	for _, pk := range pkgs {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			start := time.Now()
			out, err := runBinary(ctx, pk, testArgs, *timeout)
			d := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			hist[pk.ImportPath] = d.Seconds()
			switch {
			case err == nil && *verbose:
				_, _ = stdout.Write(out)
				fmt.Fprintf(stdout, "ok  \t%s\t%.3fs\n", pk.ImportPath, d.Seconds())
			case err == nil:
				fmt.Fprintf(stdout, "ok  \t%s\t%.3fs\n", pk.ImportPath, d.Seconds())
			default:
				failed = true
				_, _ = stdout.Write(out)
				if !bytes.HasSuffix(out, []byte("\n")) && len(out) > 0 {
					fmt.Fprintln(stdout)
				}
				// Why, when the output does not say: a signal, a bare
				// exit status, a binary that would not start.
				var exit *exec.ExitError
				if !errors.As(err, &exit) || !exit.Exited() || len(out) == 0 {
					fmt.Fprintf(stdout, "runtests: %v\n", err)
				}
				fmt.Fprintf(stdout, "FAIL\t%s\t%.3fs\n", pk.ImportPath, d.Seconds())
			}
		}()
	}
	wg.Wait()
	writeDurations(histFile, hist)
	if failed {
		fmt.Fprintln(stdout, "FAIL")
		return 1
	}
	return 0
}

// list returns the packages matching patterns that have tests.
func list(ctx context.Context, goCmd string, patterns []string) ([]pkg, error) {
	cmd := exec.CommandContext(ctx, goCmd, append([]string{"list", "-json=ImportPath,Dir,TestGoFiles,XTestGoFiles"}, patterns...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p struct {
			ImportPath, Dir           string
			TestGoFiles, XTestGoFiles []string
		}
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("go list: %w", err)
		}
		if len(p.TestGoFiles)+len(p.XTestGoFiles) > 0 {
			pkgs = append(pkgs, pkg{ImportPath: p.ImportPath, Dir: p.Dir})
		}
	}
	return pkgs, nil
}

// runBinary runs a package's test binary in the package's folder and
// returns its output (stdout and stderr, interleaved). As go test does, it
// kills a binary that outlived its own -test.timeout by a minute (SIGQUIT,
// for its goroutines' stacks), and stops waiting for the output of
// processes it left behind a minute after it exited.
func runBinary(ctx context.Context, p pkg, args []string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.Bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = time.Minute
	cmd.Dir = p.Dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (killed %v after its -test.timeout)", err, time.Minute)
	}
	return out.Bytes(), err
}

// binaryName is the file go test -c -o <dir>/ writes a package's test
// binary to: the last element of its import path, or the one before a
// major version suffix (example.com/m/v2: m.test), plus .test.
func binaryName(importPath string) string {
	elem := path.Base(importPath)
	if isMajorVersion(elem) {
		elem = path.Base(path.Dir(importPath))
	}
	return elem + ".test"
}

// isMajorVersion reports whether elem is v2, v3, ...
func isMajorVersion(elem string) bool {
	if len(elem) < 2 || elem[0] != 'v' || elem[1] == '0' {
		return false
	}
	for _, r := range elem[1:] {
		if r < '0' || r > '9' {
			return false
		}
	}
	return elem != "v1"
}

func readDurations(file string) map[string]float64 {
	h := map[string]float64{}
	if b, err := os.ReadFile(file); err == nil {
		_ = json.Unmarshal(b, &h) // a damaged file only loses the order
	}
	return h
}

// writeDurations replaces file whole (a temporary file renamed over it),
// so a run that reads it meanwhile finds the old or the new one.
func writeDurations(file string, h map[string]float64) {
	b, err := json.MarshalIndent(h, "", "  ")
	if err == nil {
		tmp := fmt.Sprintf("%s.%d", file, os.Getpid())
		if err = os.WriteFile(tmp, append(b, '\n'), 0o644); err == nil {
			err = os.Rename(tmp, file)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtests: keep durations:", err)
	}
}
