package ratelimit

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// scriptPipeline sends the limit checks of concurrent requests to Redis together. A check
// queues its script call and waits; a sender takes every call queued at that moment and sends
// them as one pipeline, so that under load a round trip carries many checks and Redis and the
// gateway pay one write and one read per batch instead of per check. A lone check goes out
// alone and at once: there is no window to wait for company. Each script stays atomic in
// Redis, so batching changes nothing in what is admitted.
type scriptPipeline struct {
	rdb     redis.UniversalClient
	timeout time.Duration
	// onRoundTrip is RegistryOptions.OnRoundTrip; nil without.
	onRoundTrip func(callers []context.Context, checks int) func(error)
	queue       chan *scriptCall
	stop        chan struct{}
	wg          sync.WaitGroup
}

// scriptCall is one queued check and, once done is closed, its reply.
type scriptCall struct {
	// ctx is the caller's, for onRoundTrip (the call itself runs in the sender's).
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	res    []int64
	err    error
	done   chan struct{}
}

const (
	// pipelineSenders is how many batches may be in flight at once: while one waits for Redis
	// the next is being gathered.
	pipelineSenders = 4
	// pipelineMaxBatch bounds one round trip.
	pipelineMaxBatch = 128
)

// errPipelineClosed is the error of a check made after the registry was closed.
var errPipelineClosed = errors.New("rate limit registry closed")

func newScriptPipeline(rdb redis.UniversalClient, timeout time.Duration, onRoundTrip func([]context.Context, int) func(error)) *scriptPipeline {
	p := &scriptPipeline{rdb: rdb, timeout: timeout, onRoundTrip: onRoundTrip, queue: make(chan *scriptCall, 4096), stop: make(chan struct{})}
	for range pipelineSenders {
		p.wg.Add(1)
		go p.sender()
	}
	return p
}

// Close stops the senders. Calls still queued are answered with errPipelineClosed.
func (p *scriptPipeline) Close() {
	close(p.stop)
	p.wg.Wait()
	for {
		select {
		case c := <-p.queue:
			c.err = errPipelineClosed
			close(c.done)
		default:
			return
		}
	}
}

// run runs script with keys and args in Redis and returns its integer-array reply. ctx bounds
// the wait: a caller that gives up leaves its call to be answered to nobody.
func (p *scriptPipeline) run(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]int64, error) {
	c := &scriptCall{ctx: ctx, script: script, keys: keys, args: args, done: make(chan struct{})}
	select {
	case p.queue <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.stop:
		return nil, errPipelineClosed
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *scriptPipeline) sender() {
	defer p.wg.Done()
	batch := make([]*scriptCall, 0, pipelineMaxBatch)
	for {
		select {
		case c := <-p.queue:
			batch = append(batch[:0], c)
		case <-p.stop:
			return
		}
	gather:
		for len(batch) < pipelineMaxBatch {
			select {
			case c := <-p.queue:
				batch = append(batch, c)
			default:
				break gather
			}
		}
		p.send(batch)
		clear(batch)
	}
}

// send runs a batch as one pipeline of EVALSHA and answers every call. A script Redis does not
// know (after a restart or SCRIPT FLUSH) is sent again with EVAL, which loads it.
func (p *scriptPipeline) send(batch []*scriptCall) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	var end func(error)
	if p.onRoundTrip != nil {
		callers := make([]context.Context, len(batch))
		for i, c := range batch {
			callers[i] = c.ctx
		}
		end = p.onRoundTrip(callers, len(batch))
	}
	if len(batch) == 1 {
		c := batch[0]
		c.res, c.err = c.script.Run(ctx, p.rdb, c.keys, c.args...).Int64Slice()
		if end != nil {
			end(c.err)
		}
		close(c.done)
		return
	}
	pipe := p.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, err := pipe.Exec(ctx) // each command carries its own error
	if end != nil {
		end(err)
	}
	for i, c := range batch {
		c.res, c.err = cmds[i].Int64Slice()
		if c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
			c.res, c.err = c.script.Run(ctx, p.rdb, c.keys, c.args...).Int64Slice()
		}
		close(c.done)
	}
}
