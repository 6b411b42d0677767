package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/portcullis/portcullis/policies"
)

// promoteOptions are the flags of promote.
type promoteOptions struct {
	path    string
	maxSize byteSize
}

func (o *promoteOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&o.path, "c", "", "the served policy `FILE`, replaced by the candidate")
	maxPolicySizeVar(fs, &o.maxSize)
}

// cmdPromote makes the candidate the served policy: it validates the candidate, then replaces
// the policy file with it by rename, so that the running gateway's watcher reloads it whole.
func cmdPromote(args []string, stdout, stderr io.Writer) error {
	var o promoteOptions
	fs, err := parseFlags("promote", o.define, args, stdout, stderr, 1)
	if err != nil {
		return err
	}
	if o.path == "" {
		return usageError("promote", stderr, "missing -c FILE")
	}
	candidate := fs.Arg(0)
	served, err := os.Stat(o.path)
	if err != nil {
		return fmt.Errorf("the served policy: %w", err)
	}
	if !served.Mode().IsRegular() {
		return fmt.Errorf("%s is not a file: promote replaces a policy file; swap the files of a folder yourself", o.path)
	}
	if fi, err := os.Stat(candidate); err != nil {
		return fmt.Errorf("the candidate: %w", err)
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a file: promote copies one policy file over another", candidate)
	}
	if abs1, abs2 := absPath(o.path), absPath(candidate); abs1 == abs2 {
		return fmt.Errorf("%s is the served policy itself", candidate)
	}
	if _, err := policies.Check(candidate, policies.Options{MaxFileSize: int64(o.maxSize)}); err != nil {
		n := 0
		for _, e := range flatten(err) {
			fmt.Fprintln(stderr, e)
			n++
		}
		fmt.Fprintf(stderr, "%s: %d problem(s); %s is unchanged\n", candidate, n, o.path)
		return exitError(1)
	}
	b, err := os.ReadFile(candidate)
	if err != nil {
		return err
	}
	// The new content is written beside the policy and renamed over it: the gateway never reads
	// half a file, and the watcher sees one change.
	tmp, err := os.CreateTemp(filepath.Dir(o.path), "."+filepath.Base(o.path)+".promote-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing is there
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(served.Mode().Perm()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), o.path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: replaced by %s; a running gateway reloads it (with -watch=false, send SIGHUP)\n", o.path, candidate)
	return nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
