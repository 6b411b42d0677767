package main

import (
	"fmt"
	"strings"
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
