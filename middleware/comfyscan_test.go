package middleware

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// fuzzKey keys the tags in the readers' fuzz seeds, so that mutations of
// them keep tags that verify.
var fuzzKey = []byte("fuzz key")

// tagged is the extra_data TagPrompt gives user's prompt id under key.
func tagged(t testing.TB, key []byte, user, id string) string {
	t.Helper()
	out, err := TagPrompt([]byte(`{"prompt":{},"prompt_id":`+strings.TrimSpace(mustJSON(id))+`}`), key, user)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(out, &m)
	return string(m["extra_data"])
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// queueSeeds are GET /queue answers, ComfyUI's and not, for the readers'
// tests and fuzz targets.
func queueSeeds(t testing.TB) []string {
	a1, a2, b1 := tagged(t, fuzzKey, "alice", "a1"), tagged(t, fuzzKey, "alice", "a2"), tagged(t, fuzzKey, "bob", "b1")
	return []string{
		`{"queue_running":[],"queue_pending":[]}`,
		`{"queue_running":[[0,"a1",{"1":{"class_type":"X","inputs":{"t":"\"]}"}}},` + a1 + `,["1"]]],"queue_pending":[[1,"b1",{},` + b1 + `,[]],[2,"a2",{},` + a2 + `,[]]]}`,
		// Python's separators, members in another order, other members.
		`{"queue_pending": [[1, "a2", {"1": {"inputs": {}}}, ` + a2 + `, ["1"]]], "x": {"queue_running": 1}, "queue_running": [[0, "b1", {}, ` + b1 + `, []]]}`,
		// One id on items of two owners is nobody's; a copied tag.
		`{"queue_running":[[0,"a1",{},` + a1 + `,[]]],"queue_pending":[[1,"a1",{},` + b1 + `,[]],[2,"b1",{},` + b1 + `,[]],[3,"b1",{},` + a1 + `,[]]]}`,
		// Short items, null items, null and odd ids, escaped keys and ids.
		`{"queue_running":[null,[],[1],[2,null,{},{}],[3,5,{},{}]],"queue_pending":[[4,"a\u0031",{},` + a1 + `],[5,"x",{},[]],[6,"y",{},null]]}`,
		`{"QUEUE_RUNNING":[],"queue_\u0070ending":[[1,"a1",{},{"comfyui_auth":{"user":"alice"},"comfyui_auth":` + a1[len(`{"comfyui_auth":`):len(a1)-1] + `},[]]]}`,
		// Not ComfyUI's: duplicate lists, null lists, lists of non-lists.
		`{"queue_running":[],"queue_pending":[],"queue_running":[[1,"a1",{},` + a1 + `,[]]]}`,
		`{"queue_running":null,"queue_pending":[]}`,
		`{"queue_running":[1],"queue_pending":[]}`,
		`{"queue_running":[],"queue_pending":[]} x`,
		`{"queue_running":[],"queue_pending":[["\x01"]]}`,
		`[]`, `null`, ``, `{"queue_running":[[1,"a1",{},{"a":tru}]],"queue_pending":[]}`,
	}
}

// historySeeds are GET /history answers, ComfyUI's and not.
func historySeeds(t testing.TB) []string {
	a1, b1 := tagged(t, fuzzKey, "alice", "a1"), tagged(t, fuzzKey, "bob", "b1")
	return []string{
		`{}`,
		`{"a1":{"prompt":[0,"a1",{"1":{}},` + a1 + `,["1"]],"outputs":{"1":{"images":[]}},"status":{"completed":true}},"b1":{"prompt":[1,"b1",{},` + b1 + `,[]],"outputs":{}}}`,
		// An entry under another prompt's key, a key twice, case, null.
		`{"b1":{"prompt":[0,"a1",{},` + a1 + `,[]]},"a1":{"prompt":[0,"a1",{},` + a1 + `,[]]},"a1":{"Prompt":[0,"a1",{},` + b1 + `,[]]}}`,
		`{"a1":{"prompt":[0,"a1",{},` + a1 + `,[]],"PROMPT":null},"x":null,"y":[],"z":{"prompt":5}}`,
		`{"a1":{"prompt":[0,"a1",{},` + a1 + `,[]],"prompt":7}}`,
		`{"a1": {"outputs": {}, "prompt": [0, "a1", {}, ` + a1 + `, []]}}`,
		`[]`, `{} {}`, `{"a":1,}`, `{"a1":{"prompt":[0,"a1",{},` + a1 + `,[]]}`,
	}
}

// queueReading is everything the queue's readers make of an answer.
type queueReading struct {
	counts  map[string]int
	inQueue map[string]bool
	owners  map[string]string
	pending map[string]bool
	running map[string][]string
	users   map[string]bool // RunningUsers
	views   map[string]string
}

var viewers = []string{"alice", "bob", "guest"}

func readQueueStreamed(raw []byte, key []byte) (q queueReading, err error) {
	q.counts, q.inQueue = map[string]int{}, map[string]bool{}
	type owned struct{ user, id string }
	seen := map[owned]bool{}
	err = ScanQueue(bytes.NewReader(raw), key, func(it QueueItem) error {
		if it.HasID {
			q.inQueue[it.ID] = true
		}
		if it.Tagged {
			seen[owned{it.User, it.ID}] = true
		}
		return nil
	})
	if err != nil {
		return q, err
	}
	for o := range seen {
		q.counts[o.user]++
	}
	if q.owners, q.pending, err = QueueOwners(bytes.NewReader(raw), key); err != nil {
		return q, err
	}
	if q.users, err = RunningUsers(bytes.NewReader(raw), key); err != nil {
		return q, err
	}
	q.running, q.views = map[string][]string{}, map[string]string{}
	for _, u := range viewers {
		if q.running[u], err = RunningOwned(bytes.NewReader(raw), key, u); err != nil {
			return q, err
		}
		v, err := OwnQueueView(bytes.NewReader(raw), q.owners, key, u, MaxOwnViewBytes)
		if err != nil {
			return q, err
		}
		q.views[u] = string(v)
	}
	return q, nil
}

func readQueueWhole(raw []byte, key []byte) (q queueReading, err error) {
	if q.counts, q.inQueue, err = wholeCountQueuedIDs(raw, key); err != nil {
		return q, err
	}
	if q.owners, q.pending, err = wholeQueueOwners(raw, key); err != nil {
		return q, err
	}
	if q.users, err = wholeRunningUsers(raw, key); err != nil {
		return q, err
	}
	q.running, q.views = map[string][]string{}, map[string]string{}
	for _, u := range viewers {
		if q.running[u], err = wholeRunningOwned(raw, key, u); err != nil {
			return q, err
		}
		v, err := wholeOwnQueueView(raw, key, u)
		if err != nil {
			return q, err
		}
		q.views[u] = string(v)
	}
	return q, nil
}

// agreeOnQueue fails t unless the streamed readers make of raw what the
// whole-answer ones do: same counts, ids, owners, running prompts and
// views, byte for byte; or refuse it as not ComfyUI's shape. Answers with
// a value longer than maxScannedValue may differ (see maxScannedValue).
func agreeOnQueue(t *testing.T, raw []byte) (accepted bool) {
	t.Helper()
	got, err := readQueueStreamed(raw, fuzzKey)
	want, wantErr := readQueueWhole(raw, fuzzKey)
	if len(raw) > maxScannedValue {
		return err == nil
	}
	switch {
	case err != nil && wantErr != nil:
		return false
	case err != nil && errors.Is(err, errNotComfyShape):
		return false
	case err != nil:
		t.Fatalf("streamed: %v; encoding/json read it: %q", err, raw)
	case wantErr != nil:
		t.Fatalf("streamed read what encoding/json refuses (%v): %q", wantErr, raw)
	}
	if !maps.Equal(got.counts, want.counts) || !maps.Equal(got.inQueue, want.inQueue) ||
		!maps.Equal(got.owners, want.owners) || !maps.Equal(got.pending, want.pending) || !maps.Equal(got.users, want.users) {
		t.Fatalf("%q:\nstreamed counts %v ids %v owners %v pending %v running users %v\nwhole    counts %v ids %v owners %v pending %v running users %v",
			raw, got.counts, got.inQueue, got.owners, got.pending, got.users, want.counts, want.inQueue, want.owners, want.pending, want.users)
	}
	for _, u := range viewers {
		if !slices.Equal(got.running[u], want.running[u]) || got.views[u] != want.views[u] {
			t.Fatalf("%q for %s:\nstreamed running %v view %s\nwhole    running %v view %s", raw, u, got.running[u], got.views[u], want.running[u], want.views[u])
		}
	}
	return true
}

// agreeOnHistory is agreeOnQueue for GET /history.
func agreeOnHistory(t *testing.T, raw []byte) (accepted bool) {
	t.Helper()
	owners, err := HistoryOwners(bytes.NewReader(raw), fuzzKey)
	want, wantErr := wholeHistoryOwners(raw, fuzzKey)
	views := map[string]string{}
	for _, u := range viewers {
		if err != nil {
			break
		}
		var v []byte
		v, err = OwnHistoryView(bytes.NewReader(raw), owners, fuzzKey, u, MaxOwnViewBytes)
		views[u] = string(v)
	}
	if len(raw) > maxScannedValue {
		return err == nil
	}
	switch {
	case err != nil && wantErr != nil:
		return false
	case err != nil:
		t.Fatalf("streamed: %v; encoding/json read it: %q", err, raw)
	case wantErr != nil:
		t.Fatalf("streamed read what encoding/json refuses (%v): %q", wantErr, raw)
	}
	if !maps.Equal(owners, want) {
		t.Fatalf("%q:\nstreamed owners %v\nwhole    owners %v", raw, owners, want)
	}
	for _, u := range viewers {
		if w, _ := wholeOwnHistoryView(raw, fuzzKey, u); string(w) != views[u] {
			t.Fatalf("%q for %s:\nstreamed view %s\nwhole    view %s", raw, u, views[u], w)
		}
	}
	return true
}

// TestStreamedReadersAgreeWithEncodingJSON: on ComfyUI's answers and on
// answers that are not, the streamed readers make what the whole-answer
// readers make with encoding/json, or refuse a list key given twice.
func TestStreamedReadersAgreeWithEncodingJSON(t *testing.T) {
	accepted := 0
	for _, raw := range queueSeeds(t) {
		if agreeOnQueue(t, []byte(raw)) {
			accepted++
		}
	}
	if accepted != 6 {
		t.Errorf("%d queue seeds read, want the 6 of ComfyUI's shape", accepted)
	}
	accepted = 0
	for _, raw := range historySeeds(t) {
		if agreeOnHistory(t, []byte(raw)) {
			accepted++
		}
	}
	if accepted != 6 {
		t.Errorf("%d history seeds read, want the 6 that are JSON objects", accepted)
	}
	q, err := readQueueStreamed([]byte(queueSeeds(t)[1]), fuzzKey)
	if err != nil || q.counts["alice"] != 2 || q.counts["bob"] != 1 || !strings.Contains(q.views["alice"], `\"]}`) {
		t.Fatalf("the classroom seed: %+v %v", q, err)
	}
	if _, err := readQueueStreamed([]byte(queueSeeds(t)[6]), fuzzKey); !errors.Is(err, errNotComfyShape) {
		t.Fatalf("queue_running twice: %v", err)
	}
}

// FuzzScanQueueAgreesWithEncodingJSON: whatever ComfyUI answers to
// GET /queue, the streamed readers never panic and make of it what the
// whole-answer readers make with encoding/json (agreeOnQueue).
func FuzzScanQueueAgreesWithEncodingJSON(f *testing.F) {
	for _, raw := range queueSeeds(f) {
		f.Add([]byte(raw))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { agreeOnQueue(t, raw) })
}

// FuzzScanHistoryAgreesWithEncodingJSON: agreeOnHistory for GET /history.
func FuzzScanHistoryAgreesWithEncodingJSON(f *testing.F) {
	for _, raw := range historySeeds(f) {
		f.Add([]byte(raw))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { agreeOnHistory(t, raw) })
}

// bigQueue streams a GET /queue answer of n items, each with a prompt of
// size bytes (one string input) and a tag of user's, without holding it.
func bigQueue(t testing.TB, key []byte, user string, n, size int) io.Reader {
	var parts []io.Reader
	parts = append(parts, strings.NewReader(`{"queue_running":[],"queue_pending":[`))
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("big-%d", i)
		sep := ","
		if i == 0 {
			sep = ""
		}
		parts = append(parts,
			strings.NewReader(sep+`[`+fmt.Sprint(i)+`,"`+id+`",{"1":{"class_type":"LoadImage","inputs":{"image":"`),
			io.LimitReader(repeatReader('A'), int64(size)),
			strings.NewReader(`"}}},`+tagged(t, key, user, id)+`,["1"]]`))
	}
	parts = append(parts, strings.NewReader(`]}`))
	return io.MultiReader(parts...)
}

// repeatReader is an endless run of one byte.
type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// allocated is how many bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestQueueReadersMemoryDoesNotGrowWithTheQueue: a queue of three prompts
// of 32 MiB (MaxPromptBytes), 96 MiB, over the 64 MiB the whole-answer
// readers held, is counted, owned and shown to another user while
// allocating under 1 MiB in all: the prompts are read past, never held;
// their owner's view of them is refused (ErrOwnViewTooLarge) before
// holding more than its bound.
func TestQueueReadersMemoryDoesNotGrowWithTheQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 96 MiB three times")
	}
	key := []byte("k")
	const n, size = 3, MaxPromptBytes
	var counts map[string]int
	var owners map[string]string
	var view []byte
	var err, countErr, ownersErr error
	used := allocated(func() {
		counts, countErr = CountQueued(bigQueue(t, key, "mallory", n, size), key)
		owners, _, ownersErr = QueueOwners(bigQueue(t, key, "mallory", n, size), key)
		view, err = OwnQueueView(bigQueue(t, key, "mallory", n, size), owners, key, "alice", MaxOwnViewBytes)
	})
	if countErr != nil || ownersErr != nil || err != nil {
		t.Fatal(countErr, ownersErr, err)
	}
	if counts["mallory"] != n || len(owners) != n || bytes.Contains(view, []byte("LoadImage")) || len(view) > 1024 {
		t.Fatalf("counts %v owners %v view %d bytes", counts, owners, len(view))
	}
	if used > 1<<20 {
		t.Fatalf("reading 3 × 96 MiB allocated %d bytes, want under 1 MiB", used)
	}
	t.Logf("3 reads of a %d MiB queue allocated %d KiB", n*size>>20, used>>10)

	budget := 40 << 20
	used = allocated(func() {
		_, err = OwnQueueView(bigQueue(t, key, "mallory", n, size), owners, key, "mallory", budget)
	})
	if !errors.Is(err, ErrOwnViewTooLarge) {
		t.Fatalf("mallory's view of her 96 MiB: %v, want ErrOwnViewTooLarge", err)
	}
	if used > uint64(3*budget) {
		t.Fatalf("a view bound to %d MiB allocated %d MiB", budget>>20, used>>20)
	}
}

// TestOwnViewsHoldTheCallersItemsUpToTheirBound: a view holds the
// caller's items up to max bytes together, and refuses beyond; other
// users' items, however large, do not count against it.
func TestOwnViewsHoldTheCallersItemsUpToTheirBound(t *testing.T) {
	key := []byte("k")
	read := func(r io.Reader) []byte { b, _ := io.ReadAll(r); return b }
	raw := read(bigQueue(t, key, "bob", 4, 1<<20))
	owners, _, err := QueueOwners(bytes.NewReader(raw), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OwnQueueView(bytes.NewReader(raw), owners, key, "alice", 1024); err != nil {
		t.Fatalf("alice, with 4 MiB of bob's in the queue and a bound of 1 KiB: %v", err)
	}
	if _, err := OwnQueueView(bytes.NewReader(raw), owners, key, "bob", 5<<20); err != nil {
		t.Fatalf("bob's 4 MiB within 5 MiB: %v", err)
	}
	if _, err := OwnQueueView(bytes.NewReader(raw), owners, key, "bob", 3<<20); !errors.Is(err, ErrOwnViewTooLarge) {
		t.Fatalf("bob's 4 MiB over 3 MiB: %v", err)
	}
	hist := []byte(`{"b1":{"prompt":[0,"b1",{"t":"` + strings.Repeat("x", 1<<20) + `"},` + tagged(t, key, "bob", "b1") + `,[]]}}`)
	hOwners, err := HistoryOwners(bytes.NewReader(hist), key)
	if err != nil || hOwners["b1"] != "bob" {
		t.Fatal(hOwners, err)
	}
	if out, err := OwnHistoryView(bytes.NewReader(hist), hOwners, key, "alice", 1024); err != nil || string(out) != "{}" {
		t.Fatalf("alice's history: %s %v", out, err)
	}
	if _, err := OwnHistoryView(bytes.NewReader(hist), hOwners, key, "bob", 1<<19); !errors.Is(err, ErrOwnViewTooLarge) {
		t.Fatalf("bob's 1 MiB entry over 512 KiB: %v", err)
	}
}

// BenchmarkCountQueuedWhole is BenchmarkCountQueued with the whole-answer
// reader (encoding/json), for comparison.
func BenchmarkCountQueuedWhole(b *testing.B) {
	key := []byte("k")
	raw := classroomQueue(b, key)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := wholeCountQueued(raw, key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOwnQueueViewWhole is BenchmarkOwnQueueView with the
// whole-answer reader (encoding/json), for comparison.
func BenchmarkOwnQueueViewWhole(b *testing.B) {
	key := []byte("k")
	raw := classroomQueue(b, key)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := wholeOwnQueueView(raw, key, "usera"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLongestPromptIDIsReadAsComfyUIWritesIt: a prompt_id of
// MaxPromptIDBytes control characters, which ComfyUI writes back as \u
// escapes six times as long, is still read as an id and counted.
func TestLongestPromptIDIsReadAsComfyUIWritesIt(t *testing.T) {
	key := []byte("k")
	id := strings.Repeat("\x01", MaxPromptIDBytes)
	escaped := `"` + strings.Repeat(`\u0001`, MaxPromptIDBytes) + `"`
	raw := `{"queue_running":[],"queue_pending":[[1,` + escaped + `,{},` + tagged(t, key, "alice", id) + `,[]]]}`
	counts, err := CountQueued(strings.NewReader(raw), key)
	if err != nil || counts["alice"] != 1 {
		t.Fatalf("counts %v, %v", counts, err)
	}
	if _, err := TagPrompt([]byte(`{"prompt":{},"prompt_id":"`+id+`x"}`), key, "alice"); err == nil {
		t.Fatal("a prompt_id over MaxPromptIDBytes was tagged")
	}
}

// TestScanHistoryNamesEachEntrysOutputFiles: each entry comes with the
// output and temp files its outputs name, as /view resolves them, for
// /view to tell whose a file is; outputs of other shapes, input files and
// names /view would serve no file for name none.
func TestScanHistoryNamesEachEntrysOutputFiles(t *testing.T) {
	key := []byte("k")
	raw := `{"a1": {"prompt": [0, "a1", {}, ` + tagged(t, key, "alice", "a1") + `, []], "outputs": {"9": {"images": [{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}, {"filename": "b.png", "subfolder": "x", "type": "temp"}], "text": ["hello", 1], "animated": [false]}, "10": {"gifs": [{"filename": "c.webp", "type": "output", "format": "image/webp"}, {"filename": ""}]}, "11": [1], "12": {"images": [{"filename": "d.png", "subfolder": "a/./b"}, {"filename": "in.png", "type": "input"}, {"filename": "../x.png"}, {"filename": "e.png", "subfolder": "a/../.."}, {"filename": 7}]}}, "status": {}},` +
		`"b1": {"outputs": 5, "prompt": null}}`
	var got []HistoryItem
	if err := ScanHistory(strings.NewReader(raw), key, func(it HistoryItem) error { got = append(got, it); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []OutputFile{{Filename: "ComfyUI_00001_.png", Type: "output"}, {Filename: "b.png", Subfolder: "x", Type: "temp"}, {Filename: "c.webp", Type: "output"}, {Filename: "d.png", Subfolder: "a/b", Type: "output"}}
	if len(got) != 2 || got[0].User != "alice" || !got[0].Tagged || !slices.Equal(got[0].Files, want) || got[1].Tagged || got[1].Files != nil {
		t.Fatalf("%+v", got)
	}
}

// TestReadErrorsArePassedOn: an answer cut by a failed read, anywhere, is
// reported with that error (a failed call to ComfyUI), not as an answer
// that is not ComfyUI's.
func TestReadErrorsArePassedOn(t *testing.T) {
	cut := errors.New("connection reset")
	for _, prefix := range []string{``, `{`, `{"queue_running":[[12`, `{"queue_running":[[1.5`, `{"queue_running":[[1e5`, `{"queue_running":[[1,"ab`, `{"queue_running":[[1,"a\`, `{"queue_running":[[1,"a",{"x":[tr`} {
		r := io.MultiReader(strings.NewReader(prefix), iotest.ErrReader(cut))
		if _, err := CountQueued(r, fuzzKey); !errors.Is(err, cut) {
			t.Errorf("cut after %q: %v", prefix, err)
		}
		r = io.MultiReader(strings.NewReader(strings.Replace(prefix, `"queue_running":[`, `"a1":{"prompt":`, 1)), iotest.ErrReader(cut))
		if _, err := HistoryOwners(r, fuzzKey); !errors.Is(err, cut) {
			t.Errorf("history cut after %q: %v", prefix, err)
		}
	}
}
