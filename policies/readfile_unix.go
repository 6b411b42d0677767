//go:build unix

package policies

import "syscall"

// openNonBlock makes opening a FIFO return at once instead of waiting for a writer; reads of
// a regular file ignore it.
const openNonBlock = syscall.O_NONBLOCK
