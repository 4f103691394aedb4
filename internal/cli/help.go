package cli

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// command is one `syncer` subcommand: its help and what runs it.
type command struct {
	name    string
	args    string // what follows "syncer <name>" in the usage line
	summary string // one sentence
	example string
	run     func(args []string, io IO) int
}

// commands is the command table, in the order `syncer help` lists them.
// It is filled by init: the commands' own help refers back to it.
var commands []command

func init() {
	commands = []command{
		{"run", "[flags]", "Syncs every configured customer once, then exits: 0 all synced, 2 some failed, 1 nothing synced.",
			"syncer run --config /etc/syncer/config.yaml --summary /tmp/summary.json", cmdRun},
		{"serve", "[flags]", "Syncs on the configured cron schedule and serves /metrics, /healthz and /readyz until stopped.",
			"syncer serve --config /etc/syncer/config.yaml --now", cmdServe},
		{"migrate", "[flags]", "Applies the schema migrations to database.schema and prints the schema's version.",
			"syncer migrate --config /etc/syncer/config.yaml", cmdMigrate},
		{"invitations", "[flags]", "Lists the pending invitations older than the stale threshold; can fail on them and notify the webhook.",
			"syncer invitations --older-than 7d --fail-on-stale --notify", cmdInvitations},
		{"reconcile", "[flags]", "Loads the company directory (--directory FILE) and lists the access exceptions; --fail-on-exceptions exits 3 when any.",
			"syncer reconcile --directory entra-users.csv --fail-on-exceptions", cmdReconcile},
		{"evidence", "--out DIR [--as-of TIME] [--since TIME] [flags] | verify DIR [--public-key FILE]",
			"Writes a point-in-time access review pack (CSV, XLSX, summary.html, signed manifest.json); `evidence verify DIR` checks one.",
			"syncer evidence --as-of 2026-03-31 --since 2025-12-31 --out review-2026-q1 && syncer evidence verify review-2026-q1", cmdEvidence},
		{"review", "diff --from TIME [--to TIME] [--format table|csv|json|markdown] [flags]",
			"Shows what changed in users, role grants, invitations and client links between two times, from history.",
			"syncer review diff --from 2025-12-31 --to 2026-03-31 --format markdown", cmdReview},
		{"auth", "[flags]", "Signs in once (OAuth consent) and stores the refresh token in the database.",
			"syncer auth --config config.yaml", cmdAuth},
		{"check", "[flags]", "Checks the whole setup, one line per check with the fix; exits 1 when any check fails.",
			"syncer check --config /etc/syncer/config.yaml", cmdCheck},
		{"demo", "[flags]", "Runs the whole job end to end against a built-in API simulator and a throwaway PostgreSQL.",
			"syncer demo", cmdDemo},
		{"version", "", "Prints the version and build information.",
			"syncer version", cmdVersion},
	}
}

func lookupCommand(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func commandNames() string {
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

// printUsage prints the overall help: every command with its sentence.
func printUsage(w io.Writer) {
	fmt.Fprint(w, `syncer exports Microsoft Advertising users, roles, account access and pending
invitations into PostgreSQL.

Usage: syncer <command> [flags]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Flags common to the commands that take them (before or after the command):
  --config FILE        configuration file (default config.yaml, or $SYNCER_CONFIG)
  --log-format F       json or text (overrides log.format)
  --log-level L        debug, info, warn or error (overrides log.level)
  --dry-run            run, serve, invitations, reconcile: read everything, write nothing
  --customer ID        run, serve, invitations, reconcile: only this customer (repeatable)

Run "syncer help <command>" (or "syncer <command> --help") for a command's flags
and an example.
`)
}

// printCommandHelp prints a command's usage line, sentence, flags (the
// flag set's own: only the flags the command takes) and example.
func printCommandHelp(w io.Writer, c command, fs *flag.FlagSet) {
	usage := "syncer " + c.name
	if c.args != "" {
		usage += " " + c.args
	}
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", usage, c.summary)
	var rows [][2]string
	width := 0
	if fs != nil {
		fs.VisitAll(func(f *flag.Flag) {
			name, text := flag.UnquoteUsage(f)
			left := "--" + f.Name
			if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool && name != "" {
				left += " " + strings.ToUpper(name)
			}
			if d := f.DefValue; d != "" && d != "false" && d != "0" && d != "0s" && d != "[]" {
				text += fmt.Sprintf(" (default: %s)", d)
			}
			rows = append(rows, [2]string{left, text})
			width = max(width, len(left))
		})
	}
	if len(rows) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		for _, r := range rows {
			fmt.Fprintf(w, "  %-*s  %s\n", width, r[0], r[1])
		}
	}
	fmt.Fprintf(w, "\nExample:\n  %s\n", c.example)
}

// cmdHelp is `syncer help [command]`.
func cmdHelp(args []string, io IO) int {
	if len(args) == 0 {
		printUsage(io.Stdout)
		return ExitOK
	}
	c, ok := lookupCommand(args[0])
	if !ok {
		return fail(io, fmt.Errorf("help: unknown command %q; the commands are %s", args[0], commandNames()))
	}
	// The command prints its own help: its flag set is the truth about
	// which flags it takes.
	return c.run([]string{"--help"}, io)
}

// globalFlags are the flags accepted before the command name; they are
// handed to the command, whose flag set decides whether it takes them.
var globalFlags = map[string]bool{ // name -> takes a value
	"config": true, "log-format": true, "log-level": true, "customer": true, "dry-run": false,
}

// hoistFlags splits `syncer [flags] <command> [args]` into the command and
// its arguments, the flags given before it first.
func hoistFlags(args []string) (cmd string, rest []string, err error) {
	var pre []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			return a, append(pre, args[i+1:]...), nil
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		takesValue, known := globalFlags[name]
		if !known {
			return "", nil, fmt.Errorf("unknown flag %s before the command (the commands are %s)", a, commandNames())
		}
		pre = append(pre, a)
		if takesValue && !hasValue {
			if i+1 >= len(args) {
				return "", nil, fmt.Errorf("flag %s needs a value", a)
			}
			i++
			pre = append(pre, args[i])
		}
	}
	return "", nil, fmt.Errorf("no command after the flags (the commands are %s)", commandNames())
}
