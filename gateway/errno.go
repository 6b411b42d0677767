//go:build !plan9

package gateway

import (
	"errors"
	"syscall"
)

// isConnRefused reports an upstream that refused the connection: nothing listens there.
func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// isConnReset reports a connection the peer reset.
func isConnReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
