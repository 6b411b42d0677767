package policies

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce merges a burst of file events (an editor's write-rename-chmod, a ConfigMap swap)
// into one reload.
const debounce = 150 * time.Millisecond

// Watcher calls onChange after the policy at a path changed. It watches the containing folder
// (for a file) or the folder itself, because editors and Kubernetes ConfigMap volumes replace
// files by rename or by swapping a ..data symlink, which a watch on the file would miss.
type Watcher struct {
	fs       *fsnotify.Watcher
	logger   *slog.Logger
	onChange func()
	relevant func(name string) bool
	hooks    watchHooks

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

var _ io.Closer = (*Watcher)(nil)

// NewWatcher starts watching path (a policy file or folder). onChange is called from the
// watcher's goroutine, once per debounced burst of changes, and never concurrently with itself.
func NewWatcher(path string, logger *slog.Logger, onChange func()) (*Watcher, error) {
	return newWatcher(path, logger, onChange, watchHooks{})
}

// watchHooks let tests observe the filter and drive the debounce timer.
type watchHooks struct {
	// observe sees every event and whether it was judged relevant.
	observe func(name string, relevant bool)
	// timer replaces the debounce timer.
	timer debounceTimer
}

// debounceTimer is the part of time.Timer the watcher uses: Reset restarts the period, C
// delivers when it ends.
type debounceTimer interface {
	C() <-chan time.Time
	Reset()
	Stop()
}

type realTimer struct{ t *time.Timer }

func newRealTimer() *realTimer {
	t := time.NewTimer(debounce)
	t.Stop()
	return &realTimer{t: t}
}

func (r *realTimer) C() <-chan time.Time { return r.t.C }
func (r *realTimer) Reset()              { r.t.Reset(debounce) }
func (r *realTimer) Stop()               { r.t.Stop() }

func newWatcher(path string, logger *slog.Logger, onChange func(), hooks watchHooks) (*Watcher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("watching policy: %w", err)
	}
	dir, relevant := path, func(name string) bool {
		base := filepath.Base(name)
		return base == "..data" || isPolicyFileName(base)
	}
	if !fi.IsDir() {
		dir = filepath.Dir(path)
		file := filepath.Base(path)
		relevant = func(name string) bool {
			base := filepath.Base(name)
			return base == file || base == "..data"
		}
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching policy: %w", err)
	}
	if err := fw.Add(dir); err != nil {
		_ = fw.Close()
		return nil, fmt.Errorf("watching policy folder %s: %w", dir, err)
	}
	w := &Watcher{
		fs:       fw,
		logger:   logger,
		onChange: onChange,
		relevant: relevant,
		hooks:    hooks,
		done:     make(chan struct{}),
	}
	w.wg.Add(1)
	go w.loop()
	return w, nil
}

func (w *Watcher) loop() {
	defer w.wg.Done()
	timer := w.hooks.timer
	if timer == nil {
		timer = newRealTimer()
	}
	defer timer.Stop()
	for {
		select {
		case <-w.done:
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			// A bare chmod changes no content.
			rel := ev.Op != fsnotify.Chmod && w.relevant(ev.Name)
			if w.hooks.observe != nil {
				w.hooks.observe(ev.Name, rel)
			}
			if rel {
				timer.Reset()
			}
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			w.logger.Warn("policy watcher error", "error", err)
		case <-timer.C():
			w.onChange()
		}
	}
}

// Close stops watching. No onChange call starts after Close returns.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		close(w.done)
		w.closeErr = w.fs.Close()
		w.wg.Wait()
	})
	return w.closeErr
}
