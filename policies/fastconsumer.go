package policies

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// consumerDecoder decodes one element of a consumers array straight into a Consumer, checking
// it as the schema does and substituting secrets, for the elements in the common shapes. It
// accepts a subset of what the slow way (generic tree, JSON Schema, secrets, strict decoding)
// accepts and must decode it identically (fastconsumer_test.go runs both): whatever it does
// not recognise, or finds wrong, it declines, and the element goes the slow way, which words
// the problems. The input is valid JSON without duplicate keys, nested at most MaxDepth deep
// (the scanner checked), so its recursion, which follows the schema's shapes, is bounded.
type consumerDecoder struct {
	res      *resolver
	duration *regexp.Regexp
	limits   limitRules
	// intern shares the strings that repeat across consumers (idp and group names).
	intern map[string]string
	// Chunks that consumers' bindings and limits are cut from, to allocate in bulk.
	bindings []Binding
	counts   []LimitCount
	reqs     []LimitReq
	scratch  []Binding
}

const decoderChunk = 256

func newConsumerDecoder(res *resolver, sch *schemas) *consumerDecoder {
	return &consumerDecoder{res: res, duration: sch.duration, limits: sch.limits, intern: map[string]string{}}
}

type cursor struct {
	d []byte
	i int
}

// peek skips whitespace and returns the next byte, 0 at the end.
func (c *cursor) peek() byte {
	c.i = skipWSAt(c.d, c.i)
	if c.i >= len(c.d) {
		return 0
	}
	return c.d[c.i]
}

// str consumes a string and returns its raw body.
func (c *cursor) str() ([]byte, bool) {
	if c.peek() != '"' {
		return nil, false
	}
	start := c.i + 1
	c.i = skipString(c.d, c.i)
	return c.d[start : c.i-1], true
}

// token consumes a number or literal.
func (c *cursor) token() []byte {
	c.peek()
	start := c.i
	c.i = skipValue(c.d, c.i)
	return c.d[start:c.i]
}

// members calls fn for each member of an object; fn consumes the value.
func (c *cursor) members(fn func(key []byte) bool) bool {
	if c.peek() != '{' {
		return false
	}
	c.i++
	if c.peek() == '}' {
		c.i++
		return true
	}
	for {
		k, ok := c.str()
		if !ok || c.peek() != ':' {
			return false
		}
		c.i++
		if !fn(k) {
			return false
		}
		switch c.peek() {
		case ',':
			c.i++
		case '}':
			c.i++
			return true
		default:
			return false
		}
	}
}

// elements calls fn for each element of an array; fn consumes it. It reports whether the
// value was an array and fn accepted every element.
func (c *cursor) elements(fn func() bool) bool {
	if c.peek() != '[' {
		return false
	}
	c.i++
	if c.peek() == ']' {
		c.i++
		return true
	}
	for {
		if !fn() {
			return false
		}
		switch c.peek() {
		case ',':
			c.i++
		case ']':
			c.i++
			return true
		default:
			return false
		}
	}
}

// rawString is a string's value as encoding/json decodes it.
func rawString(raw []byte) string { return decodeKey(raw) }

// text reads a string value, checks it against the schema (nonEmpty: minLength 1) and
// substitutes its references. It declines a reference that fails or yields "": the slow way
// reports the failure, and knows a field set to "" from an absent one.
func (d *consumerDecoder) text(c *cursor, nonEmpty, intern bool) (string, bool) {
	raw, ok := c.str()
	if !ok {
		return "", false
	}
	if intern && simpleString(raw) {
		if v, ok := d.intern[string(raw)]; ok {
			return v, true
		}
	}
	v := rawString(raw)
	if nonEmpty && v == "" {
		return "", false
	}
	if strings.Contains(v, "${") {
		r, problems := d.res.resolve(v)
		if len(problems) > 0 || r == "" {
			return "", false
		}
		return r, true
	}
	if intern && simpleString(raw) {
		d.intern[v] = v
	}
	return v, true
}

// enum reads a string that must be one of want (which hold no references).
func enum(c *cursor, want []string) (string, bool) {
	raw, ok := c.str()
	if !ok {
		return "", false
	}
	for _, w := range want {
		if string(raw) == w {
			return w, true
		}
	}
	return "", false
}

// integer reads a plain integer (no fraction or exponent, which the slow way words) within r.
func integer(c *cursor, r intRange) (int, bool) {
	if p := c.peek(); p != '-' && (p < '0' || p > '9') {
		return 0, false
	}
	tok := c.token()
	if len(tok) > 9 {
		return 0, false
	}
	n, err := strconv.Atoi(string(tok))
	if err != nil || n < r.lo || n > r.hi {
		return 0, false
	}
	return n, true
}

// number reads a plain decimal (no exponent, few digits, so that float64 holds its sign and
// magnitude exactly enough for the bounds) within r.
func number(c *cursor, r numRange) (float64, bool) {
	if p := c.peek(); p != '-' && (p < '0' || p > '9') {
		return 0, false
	}
	tok := c.token()
	if len(tok) > 15 {
		return 0, false
	}
	for _, ch := range tok {
		if ch == 'e' || ch == 'E' {
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(string(tok), 64)
	if err != nil || f < r.lo || (!r.loInclusive && f == r.lo) || f > r.hi {
		return 0, false
	}
	return f, true
}

func boolean(c *cursor) (bool, bool) {
	switch c.peek() {
	case 't':
		c.i += len("true")
		return true, true
	case 'f':
		c.i += len("false")
		return false, true
	}
	return false, false
}

func (d *consumerDecoder) durationValue(c *cursor) (Duration, bool) {
	raw, ok := c.str()
	if !ok {
		return 0, false
	}
	v := rawString(raw)
	if !d.duration.MatchString(v) {
		return 0, false
	}
	dur, err := time.ParseDuration(v)
	if err != nil {
		return 0, false
	}
	return Duration(dur), true
}

// stringList reads an array of strings, each nonEmpty if asked.
func (d *consumerDecoder) stringList(c *cursor, nonEmpty bool) ([]string, bool) {
	out := []string{}
	ok := c.elements(func() bool {
		s, ok := d.text(c, nonEmpty, false)
		out = append(out, s)
		return ok
	})
	return out, ok
}

// decode decodes one consumer from data into out; false means "take the slow way".
func (d *consumerDecoder) decode(data []byte, out *Consumer) bool {
	c := &cursor{d: data}
	var cons Consumer
	d.scratch = d.scratch[:0]
	var hasUser bool
	ok := c.members(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "username":
			cons.Username, ok = d.text(c, true, false)
			hasUser = true
		case "desc":
			cons.Desc, ok = d.text(c, false, false)
		case "group":
			cons.Group, ok = d.text(c, true, true)
		case "idps":
			ok = c.elements(func() bool {
				d.scratch = append(d.scratch, Binding{})
				return d.binding(c, &d.scratch[len(d.scratch)-1])
			})
			if ok {
				cons.IdPs = d.newBindings(len(d.scratch))
				copy(cons.IdPs, d.scratch)
			}
		case "plugins":
			ok = d.plugins(c, &cons.Plugins)
		}
		return ok
	})
	if !ok || !hasUser {
		return false
	}
	*out = cons
	return true
}

func (d *consumerDecoder) newBindings(n int) []Binding {
	if n == 0 {
		// "idps": [] decodes to an empty, non-nil slice.
		return []Binding{}
	}
	if n > len(d.bindings) {
		d.bindings = make([]Binding, max(decoderChunk, n))
	}
	b := d.bindings[:n:n]
	d.bindings = d.bindings[n:]
	return b
}

func (d *consumerDecoder) binding(c *cursor, b *Binding) bool {
	var hasIdP bool
	return c.members(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "idp":
			b.IdP, ok = d.text(c, true, true)
			hasIdP = true
		case "id":
			b.ID, ok = d.text(c, true, false)
		case "key":
			b.Key, ok = d.text(c, true, false)
		case "username":
			b.Username, ok = d.text(c, true, false)
		case "password":
			b.Password, ok = d.text(c, true, false)
		case "secret":
			b.Secret, ok = d.text(c, true, false)
		case "public_key":
			b.PublicKey, ok = d.text(c, true, false)
		case "algorithm":
			b.Algorithm, ok = d.text(c, true, false)
		case "key_id":
			b.KeyID, ok = d.text(c, true, false)
		case "subject":
			b.Subject, ok = d.text(c, true, false)
		case "scopes":
			b.Scopes, ok = d.stringList(c, true)
		case "realm_roles":
			b.RealmRoles, ok = d.stringList(c, true)
		case "groups":
			b.Groups, ok = d.stringList(c, true)
		case "permissions":
			b.Permissions, ok = d.stringList(c, true)
		case "claims":
			b.Claims = map[string]OneOrMany{}
			ok = c.members(func(name []byte) bool {
				if c.peek() == '"' {
					s, ok := d.text(c, false, false)
					b.Claims[rawString(name)] = OneOrMany{s}
					return ok
				}
				l, ok := d.stringList(c, false)
				b.Claims[rawString(name)] = l
				return ok
			})
		case "client_roles":
			b.ClientRoles = map[string][]string{}
			ok = c.members(func(name []byte) bool {
				l, ok := d.stringList(c, true)
				b.ClientRoles[rawString(name)] = l
				return ok
			})
		}
		return ok
	}) && hasIdP
}

func (d *consumerDecoder) plugins(c *cursor, pl *Plugins) bool {
	return c.members(func(k []byte) bool {
		switch string(k) {
		case "limit-count":
			var lc LimitCount
			if !d.limitCount(c, &lc) {
				return false
			}
			if len(d.counts) == 0 {
				d.counts = make([]LimitCount, decoderChunk)
			}
			d.counts[0] = lc
			pl.LimitCount = &d.counts[0]
			d.counts = d.counts[1:]
			return true
		case "limit-req":
			var lr LimitReq
			if !d.limitReq(c, &lr) {
				return false
			}
			if len(d.reqs) == 0 {
				d.reqs = make([]LimitReq, decoderChunk)
			}
			d.reqs[0] = lr
			pl.LimitReq = &d.reqs[0]
			d.reqs = d.reqs[1:]
			return true
		}
		return false
	})
}

func (d *consumerDecoder) limitCount(c *cursor, lc *LimitCount) bool {
	var hasCount, hasWindow bool
	return c.members(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "count":
			lc.Count, ok = integer(c, d.limits.count)
			hasCount = true
		case "time_window":
			lc.TimeWindow, ok = integer(c, d.limits.timeWindow)
			hasWindow = true
		case "key":
			lc.Key, ok = enum(c, d.limits.countKey)
		case "policy":
			lc.Policy, ok = enum(c, d.limits.countPolicy)
		case "window_type":
			lc.WindowType, ok = enum(c, d.limits.windows)
		case "rejected_code":
			lc.RejectedCode, ok = integer(c, d.limits.countCode)
		case "rejected_msg":
			lc.RejectedMsg, ok = d.text(c, false, false)
		case "allow_degradation":
			lc.AllowDegradation, ok = boolean(c)
		case "sync_interval":
			lc.SyncInterval, ok = d.durationValue(c)
		}
		return ok
	}) && hasCount && hasWindow
}

func (d *consumerDecoder) limitReq(c *cursor, lr *LimitReq) bool {
	var hasRate bool
	return c.members(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "rate":
			lr.Rate, ok = number(c, d.limits.rate)
			hasRate = true
		case "burst":
			lr.Burst, ok = number(c, d.limits.burst)
		case "nodelay":
			lr.NoDelay, ok = boolean(c)
		case "key":
			lr.Key, ok = enum(c, d.limits.reqKey)
		case "policy":
			lr.Policy, ok = enum(c, d.limits.reqPolicy)
		case "rejected_code":
			lr.RejectedCode, ok = integer(c, d.limits.reqCode)
		case "rejected_msg":
			lr.RejectedMsg, ok = d.text(c, false, false)
		case "allow_degradation":
			lr.AllowDegradation, ok = boolean(c)
		}
		return ok
	}) && hasRate
}
