//go:build unix && !aix

package gateway

import (
	"net"
	"syscall"
)

// canPeek: alive works here.
const canPeek = true

// alive peeks at the connection without blocking: an idle connection has nothing to read, so
// anything there (an EOF, a reset, stray bytes) means it must not carry another request.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // never wait for readiness
	})
	return err == nil && ok
}
