package main

import (
	"context"
	"fmt"
	"io"
)

func cmdExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fmt.Fprintln(stderr, "explain: not built yet")
	return exitError(2)
}
