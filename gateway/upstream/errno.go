//go:build !plan9

package upstream

import (
	"errors"
	"syscall"
)

// IsConnRefused reports an upstream that refused the connection: nothing listens there.
func IsConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// isConnReset reports a connection the peer reset.
func isConnReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
