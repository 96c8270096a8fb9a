package middleware

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// OutputFile names a file ComfyUI's GET /view serves: its directory type
// ("output", "temp" or "input"), its subfolder in that directory ("" for
// none; never absolute, never with a "." or ".." part) and its name.
type OutputFile struct{ Type, Subfolder, Filename string }

// ViewedFile is the file ComfyUI 0.3.64's view_image serves for the query
// q, resolved as it does: a filename ending in "[output]", "[input]" or
// "[temp]" names its directory (that suffix and the character before it
// are cut off), else the type parameter does ("output" when absent); the
// subfolder is joined and normalised; only the filename's last path
// element counts. ok is false when ComfyUI would serve no file: no or an
// empty filename, one starting with "/" or holding "..", an unknown type,
// a subfolder outside the directory; and, since ComfyUI could decode them
// differently, names that are not UTF-8 or hold a NUL; and a name whose
// last element still ends in an annotation, which ComfyUI would cut again
// from the forwarded filename.
func ViewedFile(q url.Values) (f OutputFile, ok bool) {
	if !q.Has("filename") {
		return f, false
	}
	name := q.Get("filename")
	for _, t := range []string{"output", "input", "temp"} {
		if base, cut := strings.CutSuffix(name, "["+t+"]"); cut {
			// Python's name[:-len(t)-3]: one character, not one byte, more.
			_, n := utf8.DecodeLastRuneInString(base)
			name, f.Type = base[:len(base)-n], t
			break
		}
	}
	if name == "" || name[0] == '/' || strings.Contains(name, "..") {
		return f, false
	}
	if f.Type == "" {
		f.Type = "output"
		if q.Has("type") {
			f.Type = q.Get("type")
		}
		if f.Type != "output" && f.Type != "temp" && f.Type != "input" {
			return f, false
		}
	}
	sub, ok := cleanSubfolder(q.Get("subfolder"))
	if !ok {
		return f, false
	}
	f.Subfolder, f.Filename = sub, path.Base(name)
	if !plainName(f.Subfolder) || !plainName(f.Filename) || annotated(f.Filename) {
		return f, false
	}
	return f, true
}

// annotated reports whether name ends in an annotation ComfyUI would cut
// off: a filename forwarded with one would be read in another directory
// than the one the gateway checked ("x.png [output] [input]" is checked
// as the input file "x.png [output]", which ComfyUI serves from output).
func annotated(name string) bool {
	return strings.HasSuffix(name, "[output]") || strings.HasSuffix(name, "[input]") || strings.HasSuffix(name, "[temp]")
}

// cleanSubfolder is a subfolder as os.path.abspath leaves it relative to
// its directory; ok is false for one that leaves the directory, and for an
// absolute one (ComfyUI accepts an absolute path inside its directory, but
// no output ever names one).
func cleanSubfolder(sub string) (string, bool) {
	if sub == "" {
		return "", true
	}
	if sub[0] == '/' {
		return "", false
	}
	c := path.Clean(sub)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", false
	}
	if c == "." {
		c = ""
	}
	return c, true
}

func plainName(s string) bool { return utf8.ValidString(s) && !strings.Contains(s, "\x00") }

// ComfyQuery splits a raw query as aiohttp (yarl) does: on "&" only, so
// a ";" stays in its value (the frontend's preview=webp;90), each name
// and value cut at its first "=" and decoded with "+" as a space. Go's
// url.ParseQuery refuses a ";", and the two must agree on what ComfyUI
// reads. An escape that is not "%" and two hex digits is an error: yarl
// would keep it as it is, and a query no browser sends need not be
// guessed at.
func ComfyQuery(raw string) (url.Values, error) {
	q := url.Values{}
	if raw == "" {
		return q, nil
	}
	for _, pair := range strings.Split(raw, "&") {
		k, v, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			return nil, err
		}
		value, err := url.QueryUnescape(v)
		if err != nil {
			return nil, err
		}
		q[name] = append(q[name], value)
	}
	return q, nil
}

// query is the /view query the gateway forwards for f: q with filename,
// subfolder and type replaced by f's, written by Go's encoder, so ComfyUI
// serves exactly the file the gateway checked whatever its own query
// parser makes of repeated keys or odd escapes. Names that are not UTF-8
// are left out: a decoder that replaced or dropped their bytes could
// read one as a second filename.
func (f OutputFile) query(q url.Values) string {
	out := url.Values{}
	for k, v := range q {
		if plainName(k) {
			out[k] = v
		}
	}
	out["filename"] = []string{f.Filename}
	out["subfolder"] = []string{f.Subfolder}
	out["type"] = []string{f.Type}
	return out.Encode()
}

// PromptOutputs is one ComfyUI history entry: its verified user ("" when
// its tag does not verify) and the files its outputs list.
type PromptOutputs struct {
	Owner string
	Files []OutputFile
}

// HistoryOutputs reads a ComfyUI GET /history (or /history/{id}) answer
// from r, streamed (ScanHistory): for each entry in order, its verified
// user and the output and temp files listed in its outputs. Prompts are
// read past, so what it holds is the entries' file names, not the answer.
func HistoryOutputs(r io.Reader, key []byte) ([]PromptOutputs, error) {
	var out []PromptOutputs
	err := ScanHistory(r, key, func(it HistoryItem) error {
		out = append(out, PromptOutputs{Owner: it.User, Files: it.Files})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Bounds of the OutputOwners index.
const (
	// MaxIndexedOutputs is how many files the index holds at most.
	MaxIndexedOutputs = 100_000
	// MaxIndexedOutputBytes bounds the index's names (subfolder, file
	// name and user, summed over its files).
	MaxIndexedOutputBytes = 16 << 20
	// RecentHistoryEntries is how many of the newest history entries a
	// miss reads first: a file just made is among them.
	RecentHistoryEntries = 64
	// FullHistoryGap is the least time between the starts of two reads of
	// the whole history.
	FullHistoryGap = 2 * time.Second
	// RunningOutputWait is how long a view of a file the index does not
	// know waits while the caller has a prompt running: a node shows its
	// image as soon as it ran, and its prompt reaches the history only
	// when the last node has.
	RunningOutputWait = 10 * time.Second
	// RunningPollGap is the least time between two reads of the newest
	// entries, or of the queue, for views that wait on a running prompt.
	RunningPollGap = 500 * time.Millisecond
)

// OutputOwners knows which user's prompt made each file in ComfyUI's
// output and temp directories, from the outputs of ComfyUI's history
// entries. It is filled from the history answers the gateway already
// reads for users (Learn), and on a miss from ComfyUI: first the newest
// RecentHistoryEntries entries; then, for a file the index does not know
// at all, if the caller has a prompt running (ComfyUI's queue says), the
// newest entries again every RunningPollGap until that prompt has
// finished, up to RunningOutputWait; then the whole history, which
// replaces the index. Each kind of read (newest entries, queue, whole
// history) has at most one call in flight gateway-wide; a miss waits for a
// read that started after it arrived, so concurrent misses share reads,
// and whole reads start at least FullHistoryGap apart. The index holds at
// most MaxIndexedOutputs files and MaxIndexedOutputBytes of names, the
// newest entries first when it is replaced; beyond, files are not
// indexed and only the operator views them. A file two users' entries
// list is nobody's. The zero value is not usable: see NewOutputOwners.
type OutputOwners struct {
	read    func(ctx context.Context, maxItems int) ([]PromptOutputs, error)
	running func(ctx context.Context) (map[string]bool, error)
	gap     time.Duration

	mu                  sync.Mutex
	owners              map[OutputFile]string
	size                int
	recent, full, queue flight
	runningNow          map[string]bool // users with a running prompt, at the last queue read
	waiting             int
}

// flight is one kind of read (of the history or the queue): at most one is scheduled or
// running at a time. Reads are numbered in the order they begin, and end
// in that order.
type flight struct {
	begun, done uint64        // reads begun and finished
	running     chan struct{} // closed when the scheduled or running read ends; nil when none
	last        time.Time     // when the last read began
	err         error         // of the last finished read
}

// NewOutputOwners makes an empty index. read is ComfyUI's GET /history
// (with ?max_items=maxItems when maxItems > 0) read by HistoryOutputs;
// running is ComfyUI's GET /queue read by RunningUsers, or nil not to wait
// on running prompts. Both run without the asking request's context, so
// that a client hanging up does not fail the others waiting for the read,
// and must bound their own time.
func NewOutputOwners(read func(ctx context.Context, maxItems int) ([]PromptOutputs, error),
	running func(ctx context.Context) (map[string]bool, error)) *OutputOwners {
	return &OutputOwners{read: read, running: running, gap: FullHistoryGap, owners: map[OutputFile]string{}}
}

// RunningUsers reads ComfyUI's GET /queue answer from r, streamed
// (ScanQueue): the verified users of its running prompts. A running
// prompt whose id is also on another user's item, or on an untagged one,
// is nobody's (as QueueOwners has it).
func RunningUsers(r io.Reader, key []byte) (map[string]bool, error) {
	running, owners, err := runningOwners(r, key)
	if err != nil {
		return nil, err
	}
	users := map[string]bool{}
	for _, id := range running {
		if owners[id] != "" {
			users[owners[id]] = true
		}
	}
	return users, nil
}

// Learn adds the files of entries the gateway read for a user; a file
// already indexed under another user becomes nobody's.
func (o *OutputOwners) Learn(entries []PromptOutputs) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range entries {
		for _, f := range e.Files {
			o.noteLocked(f, e.Owner)
		}
	}
}

func (o *OutputOwners) noteLocked(f OutputFile, owner string) {
	if prev, seen := o.owners[f]; seen {
		if prev != owner {
			o.owners[f] = ""
		}
		return
	}
	n := len(f.Subfolder) + len(f.Filename) + len(owner)
	if len(o.owners) >= MaxIndexedOutputs || o.size+n > MaxIndexedOutputBytes {
		return
	}
	o.owners[f] = owner
	o.size += n
}

// replace makes the index the files of a whole history, newest first
// while the bounds allow.
func (o *OutputOwners) replace(entries []PromptOutputs) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.owners, o.size = map[OutputFile]string{}, 0
	for i := len(entries) - 1; i >= 0; i-- {
		for _, f := range entries[i].Files {
			o.noteLocked(f, entries[i].Owner)
		}
	}
}

func (o *OutputOwners) owner(f OutputFile) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	owner, ok := o.owners[f]
	return owner, ok
}

// Owns reports whether f is user's: listed by one or more of user's
// history entries and no other user's. An error means ComfyUI's history
// or queue could not be read; the file is then not shown.
func (o *OutputOwners) Owns(ctx context.Context, user string, f OutputFile) (bool, error) {
	owner, known := o.owner(f)
	if known && owner == user {
		return true, nil
	}
	if err := o.readRecent(ctx, 0); err != nil {
		return false, err
	}
	if owner, known = o.owner(f); known {
		// Another's, or several users': a whole read would not make it
		// the caller's unless its history changed, and guessing names
		// must not cost ComfyUI whole reads.
		return owner == user, nil
	}
	if o.running != nil {
		running, err := o.readRunning(ctx, 0)
		if err != nil {
			return false, err
		}
		if running[user] {
			if err := o.awaitRunning(ctx, user, f); err != nil {
				return false, err
			}
			if owner, known = o.owner(f); known {
				return owner == user, nil
			}
		}
	}
	if err := o.await(ctx, &o.full, o.gap, func(ctx context.Context) error {
		entries, err := o.read(ctx, 0)
		if err == nil {
			o.replace(entries)
		}
		return err
	}); err != nil {
		return false, err
	}
	owner, known = o.owner(f)
	return known && owner == user, nil
}

// readRecent learns the newest history entries, from a read that began
// after the call and at least gap after the previous one.
func (o *OutputOwners) readRecent(ctx context.Context, gap time.Duration) error {
	return o.await(ctx, &o.recent, gap, func(ctx context.Context) error {
		entries, err := o.read(ctx, RecentHistoryEntries)
		if err == nil {
			o.Learn(entries)
		}
		return err
	})
}

// readRunning is the users with a running prompt, from a queue read that
// began after the call and at least gap after the previous one.
func (o *OutputOwners) readRunning(ctx context.Context, gap time.Duration) (map[string]bool, error) {
	err := o.await(ctx, &o.queue, gap, func(ctx context.Context) error {
		users, err := o.running(ctx)
		if err == nil {
			o.mu.Lock()
			o.runningNow = users
			o.mu.Unlock()
		}
		return err
	})
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.runningNow, err
}

// awaitRunning reads the newest history entries every RunningPollGap
// while user has a prompt running, up to RunningOutputWait, until f is
// among them; once user's prompt has finished, one more read settles it.
// The error is the caller's hanging up or a failed read; running out of
// time is not an error.
func (o *OutputOwners) awaitRunning(ctx context.Context, user string, f OutputFile) error {
	wctx, cancel := context.WithTimeout(ctx, RunningOutputWait)
	defer cancel()
	for {
		err := o.readRecent(wctx, RunningPollGap)
		if err == nil {
			if _, known := o.owner(f); known {
				return nil
			}
			var running map[string]bool
			if running, err = o.readRunning(wctx, RunningPollGap); err == nil && !running[user] {
				return o.readRecent(ctx, 0)
			}
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case wctx.Err() != nil:
			return nil
		case err != nil:
			return err
		}
	}
}

// await returns when a read of fl that began after await was called has
// finished, with that read's error, or at ctx's end. When none is
// scheduled it schedules one, to begin gap after the previous one began.
func (o *OutputOwners) await(ctx context.Context, fl *flight, gap time.Duration, run func(context.Context) error) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	// A read that already began may have missed the file this call looks
	// for; one scheduled but not begun will not.
	need := fl.begun + 1
	for fl.done < need {
		if fl.running == nil {
			fl.running = make(chan struct{})
			go o.fly(fl, fl.running, gap-time.Since(fl.last), run)
		}
		ch := fl.running
		o.waiting++
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		o.mu.Lock()
		o.waiting--
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fl.err
}

func (o *OutputOwners) fly(fl *flight, done chan struct{}, wait time.Duration, run func(context.Context) error) {
	if wait > 0 {
		t := time.NewTimer(wait)
		<-t.C
	}
	o.mu.Lock()
	fl.begun++
	fl.last = time.Now()
	o.mu.Unlock()
	err := run(context.Background())
	o.mu.Lock()
	fl.done++
	fl.err = err
	fl.running = nil
	o.mu.Unlock()
	close(done)
}

// Waiting is how many requests wait for a read of ComfyUI's history or
// queue.
func (o *OutputOwners) Waiting() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.waiting
}

// serveView lets a named user or guest view an output or temp file only
// when it is theirs (see OwnPrompts); input files stay shared. ComfyUI
// gets the query as the gateway read it.
func (o OwnPromptsOptions) serveView(w http.ResponseWriter, r *http.Request, next http.Handler, user string) {
	q, err := ComfyQuery(r.URL.RawQuery)
	f, ok := ViewedFile(q)
	switch {
	case err != nil:
		o.refuseView(w, r, "the query could not be read ("+err.Error()+"); send filename, subfolder and type percent-encoded, as the frontend does")
		return
	case !ok:
		o.refuseView(w, r, "the query names no file ComfyUI would serve: a filename without \"..\" or a leading \"/\", type output, temp or input, and a subfolder inside that directory, all in UTF-8")
		return
	case f.Type != "input":
		mine, err := o.Outputs.Owns(r.Context(), user, f)
		if err != nil {
			o.Failed(w, r, err)
			return
		}
		if !mine {
			InfoFrom(r).Reason = "own outputs: " + f.Type + " file of another user's prompt, or of none"
			o.refuseView(w, r, "none of the prompts of "+whose(user)+" in ComfyUI's history lists this "+f.Type+" file; each user views the outputs of their own prompts only (the operator views all). If it is yours, its prompt may have been deleted from the history")
			return
		}
	}
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = f.query(q)
	next.ServeHTTP(w, r2)
}

func (o OwnPromptsOptions) refuseView(w http.ResponseWriter, r *http.Request, reason string) {
	if InfoFrom(r).Reason == "" {
		InfoFrom(r).Reason = "own outputs: " + reason
	}
	w.Header().Set("Cache-Control", "no-store")
	Refuse(w, r, http.StatusNotFound, CodeNotYourOutput, "No such output.", reason)
}
