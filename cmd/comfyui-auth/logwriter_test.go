package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkAccessLogLineToFile is one access-log-sized event from the
// serve logger to a regular file, as under the benchmark program or a
// `> gateway.log` redirect.
func BenchmarkAccessLogLineToFile(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "gateway.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	logger, closeLog := newLogger(f, "info")
	defer closeLog()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			logger.Info().Str("method", "GET").Str("path", "/system_stats").Int("status", 200).
				Int64("bytes", 412).Dur("duration", 812*time.Microsecond).Str("client", "127.0.0.1").
				Str("auth", "hash-token").Str("request_id", "5f1c0a2b9d3e4f60").Msg("request")
		}
	})
}

// logSink is a writer the test can read while the logger writes.
type logSink struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (b *logSink) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes++
	return b.buf.Write(p)
}

func (b *logSink) snapshot() (string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String(), b.writes
}

func TestLogLinesAreBatchedWholeAndAllWrittenByClose(t *testing.T) {
	out := &logSink{}
	logger, closeLog := newLogger(out, "info")
	const writers, each = 8, 2000
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				logger.Info().Int("writer", i).Int("n", j).Str("pad", strings.Repeat("x", 200)).Msg("request")
			}
		}()
	}
	wg.Wait()
	closeLog()
	text, writes := out.snapshot()
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) != writers*each {
		t.Fatalf("%d lines, want %d", len(lines), writers*each)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"level":"info"`) || !strings.HasSuffix(l, `"message":"request"}`) {
			t.Fatalf("a line is not whole: %.120q", l)
		}
	}
	if writes > len(lines)/10 {
		t.Errorf("%d writes for %d lines: not batched", writes, len(lines))
	}
}

func TestErrorsAreWrittenAtOnceAndInfoWithinTheFlushInterval(t *testing.T) {
	out := &logSink{}
	logger, closeLog := newLogger(out, "info")
	defer closeLog()
	logger.Info().Msg("held")
	logger.Error().Msg("urgent")
	if text, _ := out.snapshot(); !strings.Contains(text, "held") || !strings.Contains(text, "urgent") {
		t.Fatalf("an error did not write out the buffer: %q", text)
	}
	logger.Info().Msg("later")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if text, _ := out.snapshot(); strings.Contains(text, "later") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an info line was not written within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	closeLog()
	logger.Info().Msg("after close")
	if text, _ := out.snapshot(); !strings.Contains(text, "after close") {
		t.Fatal("a line logged after close was held")
	}
}
