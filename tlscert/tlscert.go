// Package tlscert serves a listener's certificate from a PEM key pair on disk, read again when
// the files change, so that a renewed certificate (cert-manager, certbot) needs no restart and
// no policy reload.
package tlscert

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CheckEvery is how often, at most, the files are looked at again (on a handshake).
const CheckEvery = 5 * time.Second

// Source is a certificate and the files it was read from. Its methods are safe for concurrent
// use. It starts no goroutine: the files are checked on handshakes.
type Source struct {
	certFile, keyFile string
	logger            *slog.Logger
	now               func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]stamp // of the files cert was read from
	checked time.Time
}

// stamp tells a file's versions apart without reading it.
type stamp struct {
	mod  time.Time
	size int64
}

// Options are a Source's dependencies; zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// Now is the clock of the CheckEvery interval (default time.Now).
	Now func() time.Time
}

// Load reads the key pair. An error names the file at fault and never quotes key material.
func Load(certFile, keyFile string, opts Options) (*Source, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Source{certFile: certFile, keyFile: keyFile, logger: opts.Logger, now: opts.Now}
	cert, st, err := s.read()
	if err != nil {
		return nil, err
	}
	s.cert, s.stamp, s.checked = cert, st, s.now()
	return s, nil
}

func (s *Source) read() (*tls.Certificate, [2]stamp, error) {
	var st [2]stamp
	for i, f := range [2]string{s.certFile, s.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, st, fmt.Errorf("reading the TLS key pair: %w", err)
		}
		st[i] = stamp{mod: fi.ModTime(), size: fi.Size()}
	}
	cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return nil, st, fmt.Errorf("reading the TLS key pair %s, %s: %w", s.certFile, s.keyFile, err)
	}
	return &cert, st, nil
}

// GetCertificate is tls.Config.GetCertificate. When CheckEvery has passed since the last look
// and a file has changed, it reads the pair again; a pair that does not load (a renewal caught
// half written) is logged and the previous certificate stays in use.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if now.Sub(s.checked) < CheckEvery {
		return s.cert, nil
	}
	s.checked = now
	if s.unchanged() {
		return s.cert, nil
	}
	cert, st, err := s.read()
	if err != nil {
		s.logger.Error("TLS certificate files changed but do not load; serving the previous certificate", "err", err)
		return s.cert, nil
	}
	s.cert, s.stamp = cert, st
	s.logger.Info("TLS certificate read again", "cert_file", s.certFile)
	return s.cert, nil
}

// NotAfter is the expiry of the certificate being served (its leaf).
func (s *Source) NotAfter() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cert.Leaf == nil {
		return time.Time{}
	}
	return s.cert.Leaf.NotAfter
}

func (s *Source) unchanged() bool {
	for i, f := range [2]string{s.certFile, s.keyFile} {
		fi, err := os.Stat(f)
		if err != nil || !fi.ModTime().Equal(s.stamp[i].mod) || fi.Size() != s.stamp[i].size {
			return false
		}
	}
	return true
}
