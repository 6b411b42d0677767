//go:build unix && !aix

package upstream

import (
	"net"
	"syscall"
)

// canPeek: alive works here.
const canPeek = true

// peeker checks one connection without blocking; made once per connection, so that a check
// allocates nothing (a closure passed to RawConn.Read escapes).
type peeker struct {
	rc   syscall.RawConn
	fn   func(fd uintptr) bool
	buf  [1]byte
	idle bool
}

func newPeeker(c net.Conn) *peeker {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &peeker{rc: rc}
	p.fn = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		p.idle = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // never wait for readiness
	}
	return p
}

// alive peeks at the connection without blocking: an idle connection has nothing to read, so
// anything there (an EOF, a reset, stray bytes) means it must not carry another request.
func (p *peeker) alive() bool {
	if p == nil {
		return false
	}
	p.idle = false
	return p.rc.Read(p.fn) == nil && p.idle
}
