//go:build !unix

package policies

// openNonBlock is unix's O_NONBLOCK; elsewhere the mode check alone guards the open.
const openNonBlock = 0
