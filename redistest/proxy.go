package redistest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Proxy forwards TCP connections from 127.0.0.1 to a server. Down refuses
// new connections and cuts the open ones; Stall accepts connections and
// reads what clients send without forwarding or answering, as an
// overloaded Redis does; Up forwards again.
type Proxy struct {
	target string
	ln     net.Listener
	addr   string

	mu      sync.Mutex
	state   proxyState
	conns   map[net.Conn]struct{}
	closed  bool
	stopped chan struct{}
}

type proxyState int

const (
	proxyUp proxyState = iota
	proxyDown
	proxyStalled
)

// Proxy starts a proxy in front of the server, stopped at t.Cleanup.
func (s *Server) Proxy(t testing.TB) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: proxy: %v", err)
	}
	p := &Proxy{target: s.addr, ln: ln, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}, stopped: make(chan struct{})}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// URL returns the server's URL with the proxy's address in place of the
// server's.
func (p *Proxy) URL(s *Server) string {
	u, err := url.Parse(s.url)
	if err != nil {
		return ""
	}
	u.Host = p.addr
	return u.String()
}

// Client returns a client that goes through the proxy, closed at cleanup.
func (p *Proxy) Client(t testing.TB, s *Server) *redis.Client {
	t.Helper()
	return clientFor(t, p.URL(s))
}

// Down cuts every connection and refuses new ones (they are closed as soon
// as accepted).
func (p *Proxy) Down() { p.set(proxyDown) }

// Stall cuts every connection and leaves the new ones unanswered.
func (p *Proxy) Stall() { p.set(proxyStalled) }

// Up forwards new connections again.
func (p *Proxy) Up() { p.set(proxyUp) }

func (p *Proxy) set(st proxyState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = st
	if st != proxyUp {
		for c := range p.conns {
			_ = c.Close()
		}
		p.conns = map[net.Conn]struct{}{}
	}
}

func (p *Proxy) serve() {
	defer close(p.stopped)
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		st, closed := p.state, p.closed
		if !closed && st != proxyDown {
			p.conns[c] = struct{}{}
		}
		p.mu.Unlock()
		switch {
		case closed || st == proxyDown:
			_ = c.Close()
		case st == proxyStalled:
			go func() { _, _ = io.Copy(io.Discard, c) }()
		default:
			go p.forward(c)
		}
	}
}

func (p *Proxy) forward(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.state != proxyUp || p.closed {
		p.mu.Unlock()
		_ = c.Close()
		_ = s.Close()
		return
	}
	p.conns[s] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
	}
	go pipe(s, c)
	go pipe(c, s)
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}

func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	<-p.stopped
	p.set(proxyDown)
}
