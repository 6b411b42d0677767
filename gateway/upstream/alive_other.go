//go:build !unix || aix

package upstream

import "net"

// canPeek: no portable non-blocking peek here (AIX has no MSG_DONTWAIT; elsewhere a read
// deadline in the past fails before it reads), so the pool is not used and http.Transport, whose
// reader goroutine sees stray bytes on an idle connection, sends every request.
const canPeek = false

type peeker struct{}

func newPeeker(net.Conn) *peeker { return nil }

// alive is never asked here; it answers as a check that found the connection unusable would.
func (*peeker) alive() bool { return false }
