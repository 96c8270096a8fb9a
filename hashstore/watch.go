package hashstore

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Run watches the file until ctx is done. Nothing in it can fail for good:
// without file events, polling carries on alone, and a file that cannot be
// read is logged and retried on the next change or tick.
//
// Three sources of change are combined, because each misses something:
//   - a watch on the file path itself: the only thing that sees an in-place
//     edit of a single-file bind mount made on the host;
//   - a watch on its directory and on the directory of its resolved symlink
//     target: they see rename-over, delete and recreate, and Kubernetes'
//     atomic `..data` symlink swap (events are not filtered by name, since
//     the swap renames `..data`, not the file);
//   - polling every PollInterval, for whatever events never arrive.
//
// Every event and tick re-resolves symlinks and re-adds watches whose inode
// changed or vanished. Reloads are debounced and compare a SHA-256 of the
// content, so noise costs one read.
func (s *Store) Run(ctx context.Context) {
	if s.path == "" {
		<-ctx.Done()
		return
	}
	var (
		events <-chan fsnotify.Event
		errs   <-chan error
		ws     = &watchSet{path: s.path, watched: map[string]os.FileInfo{}}
	)
	if !s.noWatch { // tests turn events off to prove polling alone works
		if w, err := fsnotify.NewWatcher(); err != nil {
			s.log.Warn().Err(err).Dur("poll_interval", s.opts.PollInterval).
				Msg("file events unavailable; credential changes are seen by polling only")
		} else {
			defer w.Close()
			ws.fsw = w
			events, errs = w.Events, w.Errors
		}
	}
	ws.reconcile()

	var poll <-chan time.Time
	if s.opts.PollInterval > 0 {
		t := time.NewTicker(s.opts.PollInterval)
		defer t.Stop()
		poll = t.C
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()

	// The file may have changed between NewStore and Run.
	s.runCheck(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Name == s.path && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				ws.forget(s.path)
			}
			ws.reconcile()
			debounce.Reset(s.opts.Debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Usually an event queue overflow: some change may be lost, so
			// look at the file instead of trusting the silence.
			s.log.Debug().Err(err).Msg("file watcher error; re-reading the credential file")
			debounce.Reset(s.opts.Debounce)
		case <-debounce.C:
			ws.reconcile()
			s.runCheck(ctx)
		case <-poll:
			ws.reconcile()
			s.runCheck(ctx)
		}
	}
}

// watchSet keeps fsnotify watches on the file, its directory and its
// resolved target's directory, each on the inode currently at that path.
type watchSet struct {
	fsw     *fsnotify.Watcher
	path    string
	watched map[string]os.FileInfo
}

// forget drops a watch whose inode was removed or renamed away, so that
// reconcile adds it again on whatever is at the path now.
func (ws *watchSet) forget(p string) {
	if ws.fsw == nil {
		return
	}
	_ = ws.fsw.Remove(p) // may already be gone with its inode
	delete(ws.watched, p)
}

func (ws *watchSet) reconcile() {
	if ws.fsw == nil {
		return
	}
	want := map[string]bool{ws.path: true, filepath.Dir(ws.path): true}
	if real, err := filepath.EvalSymlinks(ws.path); err == nil {
		want[filepath.Dir(real)] = true
	}
	for p := range ws.watched {
		if !want[p] {
			ws.forget(p)
		}
	}
	for p := range want {
		fi, err := os.Stat(p) // follows symlinks, as inotify does
		if err != nil {
			if _, ok := ws.watched[p]; ok {
				ws.forget(p)
			}
			continue
		}
		if old, ok := ws.watched[p]; ok && os.SameFile(old, fi) {
			continue
		}
		ws.forget(p)
		if err := ws.fsw.Add(p); err == nil {
			ws.watched[p] = fi
		}
	}
}

func (s *Store) runCheck(ctx context.Context) {
	s.check(ctx, false)
	if s.afterCheck != nil {
		s.afterCheck()
	}
}
