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

const usage = `Portcullis — an IdP-federating authentication gateway.

Usage:
  portcullis run -c PATH            serve the policy file or folder PATH
  portcullis validate -c PATH       check a policy; print every problem
  portcullis explain -c PATH [-H "Name: value"]... [-d BODY] METHOD URL
                                    show how the policy decides one request
  portcullis demo                   run the petstore demo (gateway + upstream)
  portcullis sign ...               print HMAC signature headers for a request
  portcullis token ...              print a signed JWT for jwt-auth
  portcullis hash-password          read a password on stdin, print a bcrypt hash
  portcullis version                print the version
`

// run dispatches the subcommand.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError(2)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "validate":
		return cmdValidate(rest, stdout, stderr)
	case "explain":
		return cmdExplain(ctx, rest, stdout, stderr)
	case "demo":
		return cmdDemo(ctx, rest, stdout, stderr)
	case "sign":
		return cmdSign(rest, stdout, stderr)
	case "token":
		return cmdToken(rest, stdout, stderr)
	case "hash-password":
		return cmdHashPassword(stdin, stdout)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "portcullis", buildVersion())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "portcullis: unknown command %q\n\n%s", cmd, usage)
	return exitError(2)
}
