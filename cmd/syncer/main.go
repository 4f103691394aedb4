// Command syncer exports Microsoft Advertising users, roles, account access
// and pending invitations into PostgreSQL. See README.md.
package main

import (
	"os"

	"github.com/msads-syncer/syncer/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, LookupEnv: os.LookupEnv}))
}
