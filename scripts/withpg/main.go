// Command withpg runs a command against one throwaway PostgreSQL cluster:
// it starts the cluster (package pgcluster), runs the command with
// TEST_DATABASE_URL pointing at it and TEST_DATABASE_OWNED=1 (the tests may
// reconfigure that server: it is theirs), stops the cluster and exits with
// the command's status. `make test` runs the tests (scripts/runtests) under
// it, so every test package shares one cluster (each test its own schema or
// database) instead of starting one per package.
//
// With TEST_DATABASE_URL already set, it runs the command as it is.
//
//	go run ./scripts/withpg go test -race ./...
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/msads-syncer/syncer/internal/pgcluster"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: withpg command [args...]")
		return 2
	}
	// The command gets the terminal's signals itself (same process group);
	// withpg outlives it to stop the cluster. Notify, not Ignore: an
	// ignored signal stays ignored in the command.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGINT, syscall.SIGTERM)
	env := os.Environ()
	if os.Getenv(pgtest.EnvURL) == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		c, err := pgcluster.Start(ctx, nil)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "withpg:", err)
			return 1
		}
		defer func() {
			if err := c.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "withpg:", err)
			}
		}()
		env = append(env, pgtest.EnvURL+"="+c.URL(), pgtest.EnvOwned+"=1")
	}
	cmd := exec.CommandContext(context.Background(), args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return max(exit.ExitCode(), 1)
	default:
		fmt.Fprintln(os.Stderr, "withpg:", err)
		return 1
	}
}
