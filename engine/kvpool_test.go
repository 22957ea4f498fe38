package engine

// The KV pool's bound (docs/API.md §11, KV_CACHE_MB): a new sequence waits
// for room, then fails with ErrKVFull; a running one always finishes; the
// pool never holds more than it has; nothing deadlocks.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// With the pool full, a new request fails with ErrKVFull once it has waited
// KVWait, having generated nothing; the running one is untouched, and when
// it ends its blocks serve the next request.
func TestKVFullAfterWait(t *testing.T) {
	m, _ := loadFixtureWith(t, "tiny_a", Options{Threads: 1, KVWindows: 1, KVWait: 100 * time.Millisecond})
	req := GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}, MaxNewTokens: 60,
		Sampling: Sampling{Temperature: 1, Seed: 3}, TraceLayer: -1}

	holding, release := make(chan struct{}), make(chan struct{})
	var first run
	var firstErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		steps := 0
		_, firstErr = m.Generate(context.Background(), req, func(s *Step) error {
			first.tokens = append(first.tokens, s.TokenID)
			if steps++; steps == 1 {
				close(holding)
				<-release // hold the pool while the second request waits
			}
			return nil
		})
	}()
	<-holding

	began := time.Now()
	calls := 0
	_, err := m.Generate(context.Background(), req, func(*Step) error { calls++; return nil })
	waited := time.Since(began)
	if !errors.Is(err, ErrKVFull) || calls != 0 {
		t.Fatalf("second request: err %v after %d steps, want ErrKVFull before any", err, calls)
	}
	if waited < 100*time.Millisecond || waited > 5*time.Second {
		t.Errorf("ErrKVFull after %v, want after KVWait (100ms)", waited)
	}

	close(release)
	<-done
	if firstErr != nil || len(first.tokens) != req.MaxNewTokens {
		t.Fatalf("the running request: err %v, %d of %d tokens", firstErr, len(first.tokens), req.MaxNewTokens)
	}
	if again := generate(t, m, req); fmt.Sprint(again.tokens) != fmt.Sprint(first.tokens) {
		t.Fatalf("after the pool freed up: tokens %v, want %v", again.tokens, first.tokens)
	}
}

// A caller that leaves while waiting for room is dropped from the queue.
func TestKVWaitEndsWithCaller(t *testing.T) {
	m, _ := loadFixtureWith(t, "tiny_a", Options{Threads: 1, KVWindows: 1, KVWait: time.Minute})
	req := GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}, MaxNewTokens: 60, TraceLayer: -1}
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := m.Generate(context.Background(), req, func(s *Step) error {
			if s.Index == 0 {
				close(holding)
				<-release
			}
			return nil
		})
		done <- err
	}()
	<-holding
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := m.Generate(ctx, req, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting caller whose context ended: err %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if total, free := m.kvPositions(); free != total {
		t.Fatalf("%d of %d KV positions free after both ended", free, total)
	}
}

// Many more streams than the pool holds at once, of different lengths:
// every one finishes (they queue, none is cut short), each exactly as it
// runs alone, and the pool is whole again at the end.
func TestKVPoolQueuesWithoutDeadlock(t *testing.T) {
	m, _ := loadFixtureWith(t, "tiny_b", Options{Threads: 1, KVWindows: 2, KVWait: time.Minute})
	reqs := make([]GenerateRequest, 10)
	for i := range reqs {
		prompt := bytes.Repeat([]byte(fmt.Sprintf("u%d ", i)), 1+i%4)
		reqs[i] = GenerateRequest{Prompt: prompt, MaxNewTokens: 3 + 5*i,
			Sampling: Sampling{Temperature: 0.9, TopK: 20, Seed: int64(i)}, TraceLayer: i % 3}
	}
	alone, together := aloneAndTogether(t, m, reqs)
	for i := range reqs {
		if fmt.Sprint(alone[i].tokens) != fmt.Sprint(together[i].tokens) {
			t.Fatalf("request %d: tokens alone %v, queued %v", i, alone[i].tokens, together[i].tokens)
		}
	}
	if total, free := m.kvPositions(); free != total {
		t.Fatalf("%d of %d KV positions free after every sequence ended", free, total)
	}
}
