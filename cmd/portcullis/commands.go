package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// command is one subcommand. The help (portcullis CMD -h), the README's command reference
// (checked by a test) and the shell completion scripts are all written from this table, so
// that none of them can drift from the flags a command really parses.
type command struct {
	name    string
	summary string // one line for the command list
	// usage is the synopsis, one or more lines each starting "portcullis NAME"; an indented line
	// continues the one before.
	usage string
	about string // what the command does, for its -h
	// flags defines the command's flags on fs. The command parses with the same function, so
	// what -h, the README test and completion see is what it reads.
	flags func(fs *flag.FlagSet)
	// long marks commands whose flags are written with two dashes (--key-id), as curl and
	// openssl users expect; Go's flag package accepts either spelling.
	long bool
	// choices are the values completion offers: by flag name, and "" for positional arguments.
	// A flag whose placeholder is PATH or FILE completes file names.
	choices map[string][]string
	// exits are the exit codes and what they mean for this command.
	exits    []string
	examples []string
	run      func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

// Exit codes every command shares: a command may give 1 a more precise meaning.
const (
	exitOK    = "0  success"
	exitFail  = "1  failure: the reason is printed on stderr"
	exitUsage = "2  usage error: an unknown command or flag, a missing or extra argument"
)

func noFlags(*flag.FlagSet) {}

// commands is the command table, in the order the help lists it. It is a function, not a
// variable, because the commands' run functions look their own entry up in it.
func commands() []*command {
	return []*command{
		{
			name:    "run",
			summary: "serve a policy file or folder",
			usage:   "portcullis run -c PATH [-shadow PATH] [-watch=true] [-log-level info] [-access-log=true] [-max-policy-size 512MiB]",
			about: `Serves the policy PATH (a JSON file, or a folder whose *.json files are merged) on the
listeners it names. The operational log (JSON) goes to stderr, the access log (one JSON line
per request) to stdout. The policy is reloaded when its files change (unless -watch=false) and
on SIGHUP; a policy that fails to load leaves the old one serving. SIGTERM or SIGINT stop
accepting connections and drain the requests in flight (up to 30 s).

-shadow PATH tries a candidate policy on live traffic: after each request is answered, a copy
(without its body) is decided by the candidate off the response path, consuming no limit, and
the decisions are compared (status, consumer, route, deciding step). Each difference is logged
as shadow_difference and counted in portcullis_shadow_decisions_total{result}, and /status
shows the candidate's version and counts; only the served decision acts. The candidate is
reloaded with the served policy; one that fails to load is logged and the previous one is kept.
Promote it by replacing the served policy file with it.`,
			flags:   func(fs *flag.FlagSet) { new(runOptions).define(fs) },
			choices: map[string][]string{"log-level": {"debug", "info", "warn", "error"}},
			exits:   []string{"0  stopped by SIGTERM or SIGINT after draining", "1  the policy did not load, a listener could not be opened, or serving failed", exitUsage},
			examples: []string{"portcullis run -c /etc/portcullis", "portcullis run -c policy.json -log-level debug -access-log=false",
				"portcullis run -c policy.json -shadow candidate.json"},
			run: func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
				return cmdRun(ctx, args, stdout, stderr)
			},
		},
		{
			name:    "validate",
			summary: "check a policy and print every problem",
			usage:   "portcullis validate [-max-policy-size 512MiB] PATH\nportcullis validate -c PATH [-max-policy-size 512MiB]",
			about: `Loads the policy PATH as run would, without serving it, and prints every problem at once,
each with its file:line:col and JSON path, on stderr. Warnings (valid, but most likely a
mistake) are printed too and do not fail the check.`,
			flags: func(fs *flag.FlagSet) { new(validateOptions).define(fs) },
			exits: []string{"0  the policy is valid (it may have warnings)", "1  the policy has problems, or could not be read", exitUsage},
			examples: []string{"portcullis validate examples/petstore.json",
				"portcullis validate /etc/portcullis && systemctl reload portcullis"},
			run: func(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
				return cmdValidate(args, stdout, stderr)
			},
		},
		{
			name:    "explain",
			summary: "show how a policy decides one request",
			usage:   `portcullis explain -c PATH [-H "Name: value"]... [-d BODY] [-remote-addr 127.0.0.1:40000] [-max-policy-size 512MiB] METHOD URL`,
			about: `Evaluates one request against the policy PATH without proxying it or consuming a rate
limit, and prints each step of the decision: the route, each credential and binding, the
consumer, the allow lists, the limits that apply and where the request would go. URL is a full
URL (its host is matched) or a path.`,
			flags:   func(fs *flag.FlagSet) { new(explainOptions).define(fs) },
			choices: map[string][]string{"": {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}},
			exits:   []string{"0  the request would be forwarded", "1  the request would be refused (the status and message are printed), or the policy did not load", exitUsage},
			examples: []string{`portcullis explain -c examples/petstore.json -H 'apikey: bot-key' GET /petstore`,
				`portcullis explain -c policy.json -remote-addr 203.0.113.7:5000 POST http://api.example/orders -d '{}'`},
			run: func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
				return cmdExplain(ctx, args, stdout, stderr)
			},
		},
		{
			name:    "test",
			summary: "check a policy's decisions against test files",
			usage:   "portcullis test -c PATH [-format text|junit] [-max-policy-size 512MiB] FILE...",
			about: `Decides each case of the test files FILE (JSON, schema cmd/portcullis/testfile.schema.json)
against the policy PATH as the running gateway would, without proxying: a request, with its
credentials (apikey, basic, hmac, jwt, oidc) written as the sign and token helpers write them, and the
expected status (200 when allowed), consumer, route, deciding step and headers. Each case starts
with fresh limits; "after": N decides N identical requests first. Secrets may be written
${env:NAME}. Prints each failing case with what differs and the explain trace of its request,
then "N passed, M failed"; -format junit writes JUnit XML on stdout instead (the summary then
goes to stderr). Nothing is sent to the network: oidc and keycloak tokens ("oidc": {"idp",
"claims"}) are signed with the file's "issuer_key", which stands in for the issuers' keys;
introspection and Keycloak permission decisions fail as not supported offline.`,
			flags:   func(fs *flag.FlagSet) { new(testOptions).define(fs) },
			choices: map[string][]string{"format": {"text", "junit"}},
			exits:   []string{"0  every case passed", "1  a case failed, a test file has problems, or the policy did not load", exitUsage},
			examples: []string{"portcullis test -c examples/petstore.json examples/tests/petstore.test.json",
				"portcullis test -c /etc/portcullis -format junit tests/*.json > policy-tests.xml"},
			run: func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
				return cmdTest(ctx, args, stdout, stderr)
			},
		},
		{
			name:    "promote",
			summary: "make a candidate (shadow) policy the served one",
			usage:   "portcullis promote -c FILE [-max-policy-size 512MiB] CANDIDATE",
			about: `Validates the policy file CANDIDATE as run would, then replaces the served policy FILE with
it, atomically (written beside FILE and renamed over it, keeping FILE's permissions): a gateway
watching FILE reloads it, one running with -watch=false on SIGHUP. A candidate with problems
prints them and leaves FILE unchanged. FILE must be a file, not a folder.`,
			flags:    func(fs *flag.FlagSet) { new(promoteOptions).define(fs) },
			exits:    []string{"0  FILE now holds the candidate", "1  the candidate has problems (FILE is unchanged), or FILE could not be replaced", exitUsage},
			examples: []string{"portcullis promote -c /etc/portcullis/policy.json /etc/portcullis/candidate.json"},
			run: func(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
				return cmdPromote(args, stdout, stderr)
			},
		},
		{
			name:    "demo",
			summary: "run the petstore demo (gateway and a small upstream)",
			usage:   "portcullis demo [-c PATH] [-upstream 127.0.0.1:9100]",
			about: `Runs the petstore scenario: a small built-in upstream and the gateway serving
examples/petstore.json (from the working directory when it is there, so that edits reload;
otherwise the copy built into the binary), and prints the curl commands to try.`,
			flags:    func(fs *flag.FlagSet) { new(demoOptions).define(fs) },
			exits:    []string{"0  stopped by SIGTERM or SIGINT", "1  a port was taken or the policy did not load", exitUsage},
			examples: []string{"portcullis demo", "portcullis demo -upstream 127.0.0.1:9200 -c my-petstore.json"},
			run: func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
				return cmdDemo(ctx, args, stdout, stderr)
			},
		},
		{
			name:    "sign",
			summary: "print the hmac-auth signature headers of a request",
			usage: `portcullis sign --key-id ID --secret SECRET [--algorithm hmac-sha256] [--headers "@request-target date"]
    [--date "RFC 1123 date"] [--body FILE] [--header "Name: value"]... METHOD URL`,
			about: `Prints the Date, Digest (with --body) and Authorization headers a client sends to an
hmac-auth provider for the request METHOD URL (a path, or a full URL whose host is used).
The secret is the binding's secret; pass it from a variable, not typed on the command line of
a shared machine.`,
			flags: func(fs *flag.FlagSet) { new(signOptions).define(fs) },
			long:  true,
			choices: map[string][]string{"algorithm": {"hmac-sha1", "hmac-sha256", "hmac-sha512"},
				"": {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}},
			exits: []string{exitOK, exitFail, exitUsage},
			examples: []string{`portcullis sign --key-id partner --secret "$PARTNER_HMAC" GET /petstore`,
				`portcullis sign --key-id partner --secret "$PARTNER_HMAC" --body order.json POST http://api.example/orders`},
			run: func(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
				return cmdSign(args, stdout, stderr)
			},
		},
		{
			name:    "token",
			summary: "print a signed JWT for jwt-auth",
			usage: `portcullis token --key KEY (--secret SECRET | --private-key PEMFILE) [--algorithm ALG] [--ttl 1h]
    [--key-claim key] [--claim k=v]...`,
			about: `Prints a JWT whose key claim names a jwt-auth binding, signed with the binding's HMAC secret
or with the private key whose public key the binding holds, followed by a newline. A secret
shorter than RFC 7518 §3.2 requires (32 bytes for HS256, 48 for HS384, 64 for HS512) is
warned about on stderr.`,
			flags: func(fs *flag.FlagSet) { new(tokenOptions).define(fs) },
			long:  true,
			choices: map[string][]string{"algorithm": {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
				"PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}},
			exits: []string{exitOK, exitFail, exitUsage},
			examples: []string{`portcullis token --key bob-jwt --secret "$BOB_SECRET" --ttl 1h`,
				`portcullis token --key svc --private-key svc.pem --claim role=admin`},
			run: func(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
				return cmdToken(args, stdout, stderr)
			},
		},
		{
			name:    "hash-password",
			summary: "read a password on stdin, print its bcrypt hash",
			usage:   "portcullis hash-password < password",
			about: `Reads a password (the first line of stdin) and prints its bcrypt hash, for the password of
a basic-auth binding.`,
			flags:    noFlags,
			exits:    []string{exitOK, "1  stdin holds no password, or one longer than bcrypt's 72 bytes", exitUsage},
			examples: []string{"echo -n 's3cret' | portcullis hash-password", "portcullis hash-password < password.txt"},
			run: func(_ context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
				if _, err := parseFlags("hash-password", noFlags, args, stdout, stderr, 0); err != nil {
					return err
				}
				return cmdHashPassword(stdin, stdout)
			},
		},
		{
			name:     "version",
			summary:  "print the version",
			usage:    "portcullis version",
			about:    "Prints the version: the one make build stamped, else the module version go install recorded.",
			flags:    noFlags,
			exits:    []string{exitOK, exitUsage},
			examples: []string{"portcullis version"},
			run: func(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
				if _, err := parseFlags("version", noFlags, args, stdout, stderr, 0); err != nil {
					return err
				}
				fmt.Fprintln(stdout, "portcullis", buildVersion())
				return nil
			},
		},
		{
			name:    "completion",
			summary: "print the shell completion script (bash or zsh)",
			usage:   "portcullis completion bash|zsh",
			about: `Prints a completion script for bash or zsh, written from the commands' own flags: the
commands, their flags, the values of flags that have a fixed set, and file names for paths.
Load it in the shell's start-up file.`,
			flags:   noFlags,
			choices: map[string][]string{"": {"bash", "zsh"}},
			exits:   []string{exitOK, exitUsage},
			examples: []string{"source <(portcullis completion bash)      # in ~/.bashrc",
				"portcullis completion zsh > \"${fpath[1]}/_portcullis\""},
			run: func(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
				fs, err := parseFlags("completion", noFlags, args, stdout, stderr, 1)
				if err != nil {
					return err
				}
				switch shell := fs.Arg(0); shell {
				case "bash", "zsh":
					return completionScript(stdout, shell)
				default:
					return usageError("completion", stderr, "unknown shell %q: want bash or zsh", shell)
				}
			},
		},
		{
			name:     "help",
			summary:  "print the help of portcullis or of a command",
			usage:    "portcullis help [COMMAND]",
			about:    "Prints the list of commands, or the description, flags, exit codes and examples of COMMAND.",
			flags:    noFlags,
			exits:    []string{exitOK, exitUsage},
			examples: []string{"portcullis help explain"},
			run:      cmdHelp,
		},
	}
}

// lookup finds a command by name; nil when there is none.
func lookup(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// dash is how the command's flags are written.
func (c *command) dash() string {
	if c.long {
		return "--"
	}
	return "-"
}

// flagSet returns the command's flags, defined but unparsed, for help, tests and completion.
func (c *command) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.flags(fs)
	return fs
}

// errHelp ends a command that printed its help because -h was asked: exit status 0.
var errHelp = errors.New("help printed")

// parseFlags parses args with the flags define adds. -h or --help prints the command's help
// on stdout and returns errHelp; a bad flag, or a number of positional arguments other than
// nargs (-1: any), prints the problem and the usage on stderr and returns exitError(2).
func parseFlags(name string, define func(*flag.FlagSet), args []string, stdout, stderr io.Writer, nargs int) (*flag.FlagSet, error) {
	c := lookup(name)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package prints its own error line; the usage is ours.
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	define(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.writeHelp(stdout)
			return nil, errHelp
		}
		c.writeUsage(stderr)
		return nil, exitError(2)
	}
	if nargs >= 0 && fs.NArg() != nargs {
		if fs.NArg() > nargs {
			fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(nargs))
		} else {
			fmt.Fprintf(stderr, "missing arguments: want %d, got %d\n", nargs, fs.NArg())
		}
		c.writeUsage(stderr)
		return nil, exitError(2)
	}
	return fs, nil
}

// usageError prints why the arguments are wrong and the command's usage on stderr.
func usageError(name string, stderr io.Writer, format string, args ...any) error {
	fmt.Fprintf(stderr, format+"\n", args...)
	lookup(name).writeUsage(stderr)
	return exitError(2)
}

// writeUsage prints the synopsis and where the help is: the answer to a usage error.
func (c *command) writeUsage(w io.Writer) {
	for i, line := range strings.Split(c.usage, "\n") {
		prefix := "usage: "
		if i > 0 {
			prefix = "       "
		}
		fmt.Fprintf(w, "%s%s\n", prefix, line)
	}
	fmt.Fprintf(w, "Run 'portcullis %s -h' for its flags, exit codes and examples.\n", c.name)
}

// writeHelp prints the command's description, synopsis, flags with defaults, exit codes and
// examples.
func (c *command) writeHelp(w io.Writer) {
	fmt.Fprintf(w, "portcullis %s — %s\n\nUsage:\n", c.name, c.summary)
	for _, line := range strings.Split(c.usage, "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
	fmt.Fprintf(w, "\n%s\n", c.about)
	if fl := c.flagHelp(); fl != "" {
		fmt.Fprintf(w, "\nFlags:\n%s", fl)
	}
	fmt.Fprintf(w, "\nExit codes:\n")
	for _, e := range c.exits {
		fmt.Fprintf(w, "  %s\n", e)
	}
	fmt.Fprintf(w, "\nExamples:\n")
	for _, e := range c.examples {
		fmt.Fprintf(w, "  %s\n", e)
	}
}

// flagInfo is what the help and completion say of one flag.
type flagInfo struct {
	name, placeholder, usage, def string
	isBool, repeatable            bool
}

// flagInfos lists the command's flags in name order.
func (c *command) flagInfos() []flagInfo {
	var out []flagInfo
	c.flagSet().VisitAll(func(f *flag.Flag) {
		placeholder, usage := flag.UnquoteUsage(f)
		fi := flagInfo{name: f.Name, placeholder: placeholder, usage: usage, def: f.DefValue}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			fi.isBool, fi.placeholder = true, ""
		}
		_, fi.repeatable = f.Value.(*repeated)
		out = append(out, fi)
	})
	return out
}

// flagHelp is the Flags section: each flag, its placeholder, what it does and its default.
func (c *command) flagHelp() string {
	var b strings.Builder
	for _, f := range c.flagInfos() {
		fmt.Fprintf(&b, "  %s%s", c.dash(), f.name)
		if f.placeholder != "" {
			fmt.Fprintf(&b, " %s", f.placeholder)
		}
		fmt.Fprintf(&b, "\n      %s", f.usage)
		switch {
		case f.repeatable:
			b.WriteString(" (repeatable)")
		case f.def != "" && f.def != "0" && !(f.isBool && f.def == "false"):
			fmt.Fprintf(&b, " (default %s)", f.def)
		}
		b.WriteString("\n")
	}
	return b.String()
}

const mainAbout = `Portcullis — an IdP-federating authentication gateway.

Usage:
  portcullis COMMAND [flags] [arguments]

Commands:
`

// writeMainHelp prints the list of commands, the shared exit codes and examples.
func writeMainHelp(w io.Writer) {
	fmt.Fprint(w, mainAbout)
	cmds := commands()
	width := 0
	for _, c := range cmds {
		width = max(width, len(c.name))
	}
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, c.summary)
	}
	fmt.Fprintf(w, `
Run 'portcullis COMMAND -h' for a command's flags, exit codes and examples.

Exit codes:
  %s
  1  failure: the reason is printed on stderr (validate: the policy has problems;
     explain: the request would be refused; test: a case failed)
  %s

Examples:
  portcullis demo
  portcullis validate policy.json
  portcullis run -c policy.json
  portcullis explain -c policy.json -H 'apikey: bot-key' GET /petstore
  portcullis test -c policy.json policy.test.json
`, exitOK, exitUsage)
}

// writeShortMainUsage is the answer to no command or an unknown one.
func writeShortMainUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: portcullis COMMAND [flags] [arguments]\ncommands: %s\nRun 'portcullis -h' for help.\n",
		strings.Join(commandNames(), ", "))
}

// cmdHelp prints the main help or a command's.
func cmdHelp(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs, err := parseFlags("help", noFlags, args, stdout, stderr, -1)
	if err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
		writeMainHelp(stdout)
		return nil
	case 1:
		if c := lookup(fs.Arg(0)); c != nil {
			c.writeHelp(stdout)
			return nil
		}
		fmt.Fprintf(stderr, "portcullis: unknown command %q\n", fs.Arg(0))
		writeShortMainUsage(stderr)
		return exitError(2)
	}
	return usageError("help", stderr, "unexpected argument %q", fs.Arg(1))
}

// commandNames lists the command names in table order.
func commandNames() []string {
	var out []string
	for _, c := range commands() {
		out = append(out, c.name)
	}
	return out
}
