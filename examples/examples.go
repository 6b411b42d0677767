// Package examples holds the example policies, embedded so that `portcullis demo` works from
// the binary alone.
package examples

import "embed"

// Files are the example policies (*.json).
//
//go:embed *.json
var Files embed.FS
