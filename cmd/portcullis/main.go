// Command portcullis is the Portcullis gateway and its client helpers.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=..."; without it buildVersion
// takes the module version go install/go build recorded (or the VCS revision).
var version = ""

// buildVersion is the version the binary reports.
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	return versionOf(bi)
}

// versionOf picks the most telling version from the build info: the module's (go install
// pkg@v1.2.3), else the VCS revision (go build in a checkout), else "dev".
func versionOf(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return "dev-" + rev + dirty
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		fmt.Fprintln(os.Stderr, "portcullis:", err)
		os.Exit(1)
	}
}

// exitError ends the program with a status and no further message (the command printed it).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// run dispatches the subcommand. -h, --help and help print on stdout and exit 0; a missing or
// unknown command prints the usage on stderr and exits 2.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		writeShortMainUsage(stderr)
		return exitError(2)
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		writeMainHelp(stdout)
		return nil
	case "--version", "-v":
		name = "version"
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "portcullis: unknown command %q\n", name)
		writeShortMainUsage(stderr)
		return exitError(2)
	}
	err := c.run(ctx, rest, stdin, stdout, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}
