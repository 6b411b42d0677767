package gateway

import "sync"

// bufferPool recycles the 32 KiB copy buffers of the reverse proxy.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (p *bufferPool) Get() []byte  { return *p.get() }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }

// get and put pass the pooled pointer itself: Put's &b costs an allocation per request.
func (p *bufferPool) get() *[]byte  { return p.pool.Get().(*[]byte) }
func (p *bufferPool) put(b *[]byte) { p.pool.Put(b) }
