package main

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/portcullis/portcullis/policies"
)

// repeated collects a flag given several times (-H, --header, --claim).
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ", ") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

// cutHeader splits a "Name: value" flag value; flag names it in the error.
func cutHeader(flag, kv string) (name, value string, err error) {
	name, value, ok := strings.Cut(kv, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return "", "", fmt.Errorf("parsing %s %q: want \"Name: value\"", flag, kv)
	}
	return strings.TrimSpace(name), strings.TrimSpace(value), nil
}

// byteSize is a size flag: bytes, or a number with KiB, MiB or GiB.
type byteSize int64

// String writes whole KiB, MiB and GiB with their unit, so that a default reads 512MiB.
func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Set(v string) error {
	num, mult := v, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("want a positive size in bytes, or with KiB, MiB or GiB (512MiB), got %q", v)
	}
	*b = byteSize(n * mult)
	return nil
}

// maxPolicySizeVar adds -max-policy-size, the cap of each policy file, to b.
func maxPolicySizeVar(fs *flag.FlagSet, b *byteSize) {
	*b = byteSize(policies.DefaultMaxFileSize)
	fs.Var(b, "max-policy-size", "`SIZE` of the largest policy file read: bytes, or a number with KiB, MiB, GiB")
}
