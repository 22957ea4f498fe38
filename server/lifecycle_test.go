package server

// Faults and the process lifecycle (docs/RELIABILITY.md, "Faults"): a client
// that leaves, a client that stops reading, SIGTERM with streams in flight,
// and the model loading in the background.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"

	"nielsgpt/engine"
	"nielsgpt/internal/testkit"
)

func longChat(n int) string {
	return fmt.Sprintf(`{"messages":[{"role":"user","content":"hello"}],"trace_layer":0,"max_new_tokens":%d}`, n)
}

func longFake(delay time.Duration) *fakeEngine {
	f := newFakeEngine()
	f.reply = strings.Repeat("abcdefghij", 100)
	f.delay = delay
	return f
}

// A client that disconnects mid-stream stops the engine within one step, and
// the slot and the active-streams gauge are given back.
func TestClientDisconnectStopsGeneration(t *testing.T) {
	fake := longFake(10 * time.Millisecond)
	ts := startServer(t, testConfig(), fake)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/chat/stream", strings.NewReader(longChat(1000)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// Read a few events, then hang up.
	seen := 0
	for ev, err := range sse.Read(resp.Body, &sse.ReadConfig{MaxEventSize: 1 << 20}) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == "token" {
			seen++
		}
		if seen == 3 {
			break
		}
	}
	if ts.Metrics().ActiveStreams() != 1 {
		t.Fatalf("active streams %v during the stream", ts.Metrics().ActiveStreams())
	}
	cancel()
	resp.Body.Close()
	atCancel := fake.steps.Load()

	testkit.Eventually(t, waitLimit, "the engine to stop", func() bool { return fake.running.Load() == 0 })
	testkit.Eventually(t, waitLimit, "active streams back to 0", func() bool { return ts.Metrics().ActiveStreams() == 0 })
	testkit.Eventually(t, waitLimit, "the slot back", func() bool { return ts.Metrics().ActiveGenerations() == 0 })
	stopped := fake.steps.Load()
	time.Sleep(50 * time.Millisecond) // five more step times: nothing may run
	if after := fake.steps.Load(); after != stopped || stopped-atCancel > 1 {
		t.Fatalf("steps: %d at hang-up, %d when stopped, %d later; want at most one more", atCancel, stopped, after)
	}
}

// A client that stops reading cannot hold a slot: the write deadline fails
// the write, which cancels the generation; memory stays bounded by the
// small queue meanwhile.
func TestStalledReaderTimesOut(t *testing.T) {
	cfg := testConfig()
	cfg.WriteTimeout = 200 * time.Millisecond
	fake := longFake(0)
	// Big trace events (64 heads × 4096 positions ≈ 2.5 MB each) fill the
	// socket buffers after a few steps.
	fake.cfg.Heads = 64
	fake.cfg.Context = 4096
	ts := startServer(t, cfg, fake)

	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	body := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 3000) + `"}],"trace_layer":0,"max_new_tokens":1000}`
	fmt.Fprintf(conn, "POST /chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	// Never read. The server must give up on its own.
	testkit.Eventually(t, waitLimit, "the stream to start", func() bool { return fake.steps.Load() > 0 })
	testkit.Eventually(t, waitLimit, "the stalled stream to be dropped", func() bool {
		return ts.Metrics().ActiveStreams() == 0 && ts.Metrics().ActiveGenerations() == 0 && fake.running.Load() == 0
	})
	if n := fake.steps.Load(); n >= 1000 {
		t.Fatalf("the engine ran all %d steps for a client that was not reading", n)
	}
}

// A stream that lasts longer than READ_TIMEOUT is not cut: the body's read
// deadline is cleared once the body is in.
func TestLongStreamOutlivesReadTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.ReadTimeout = 50 * time.Millisecond
	fake := longFake(5 * time.Millisecond)
	ts := startServer(t, cfg, fake)
	events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", longChat(60)))
	if len(events) != 121 || events[120].Type != "done" {
		t.Fatalf("%d events, last %+v", len(events), events[len(events)-1])
	}
}

// runServer starts Run on a loopback port and returns its address, the
// function that stands for SIGTERM, and Run's result.
func runServer(t *testing.T, cfg Config, load LoadFunc) (addr string, sigterm func(), result <-chan error, s *Server) {
	t.Helper()
	s, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, returned := make(chan error, 1), make(chan struct{})
	go func() {
		done <- s.Run(ctx, ln, load)
		close(returned)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-returned:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	return "http://" + ln.Addr().String(), cancel, done, s
}

// runReturned waits for Run's result; a Run still going 5 s later fails the
// test.
func runReturned(t *testing.T, result <-chan error) error {
	t.Helper()
	select {
	case err := <-result:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func loadFake(f *fakeEngine) LoadFunc {
	return func(context.Context) (Engine, error) { return f, nil }
}

// SIGTERM: no new connections, the stream in flight finishes normally, the
// model is closed only after it, and Run returns nil (exit 0).
func TestShutdownDrainsStreams(t *testing.T) {
	fake := longFake(5 * time.Millisecond)
	addr, sigterm, result, s := runServer(t, testConfig(), loadFake(fake))
	testkit.Eventually(t, waitLimit, "model ready", func() bool { return s.currentEngine() != nil })

	resp := postJSON(t, addr+"/chat/stream", longChat(100))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var last sse.Event
	for ev, err := range sse.Read(resp.Body, &sse.ReadConfig{MaxEventSize: 1 << 20}) {
		if err != nil {
			t.Fatalf("stream broken during the drain: %v", err)
		}
		if last.Type == "" { // the stream is under way: SIGTERM now
			sigterm()
			testkit.Eventually(t, waitLimit, "the listener to close", func() bool {
				c, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "http://"), 100*time.Millisecond)
				if err == nil {
					c.Close()
				}
				return err != nil
			})
		}
		last = ev
	}
	resp.Body.Close()
	if last.Type != "done" {
		t.Fatalf("in-flight stream ended with %+v", last)
	}
	if err := runReturned(t, result); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if fake.closed.Load() != 1 || fake.closedWhileRunning.Load() {
		t.Fatalf("engine closed %d times (while running: %v)", fake.closed.Load(), fake.closedWhileRunning.Load())
	}
}

// A drain that outlasts SHUTDOWN_TIMEOUT cuts the remaining streams, which
// stop within a step, and the model is not closed under them.
func TestShutdownTimeoutCutsStreams(t *testing.T) {
	cfg := testConfig()
	cfg.ShutdownTimeout = 200 * time.Millisecond
	fake := longFake(10 * time.Millisecond) // 1000 steps: 10 s
	addr, sigterm, result, s := runServer(t, cfg, loadFake(fake))
	testkit.Eventually(t, waitLimit, "model ready", func() bool { return s.currentEngine() != nil })
	resp := postJSON(t, addr+"/chat/stream", longChat(1000))
	testkit.Eventually(t, waitLimit, "the stream to start", func() bool { return fake.steps.Load() > 0 })
	start := time.Now()
	sigterm()
	events := readEvents(t, resp)
	if err := runReturned(t, result); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("shutdown took %v", elapsed)
	}
	if last := events[len(events)-1]; last.Type != "error" || last.Data != `{"error":"Server is shutting down","code":"shutting_down"}` {
		t.Fatalf("cut stream ended with %+v", last)
	}
	if fake.running.Load() != 0 || fake.closed.Load() != 1 || fake.closedWhileRunning.Load() {
		t.Fatalf("running %d, closed %d, closed while running %v", fake.running.Load(), fake.closed.Load(), fake.closedWhileRunning.Load())
	}
}

// A full-attention request still generating when SHUTDOWN_TIMEOUT runs out
// gets a 503 that says why, not a 200 with an empty body.
func TestShutdownTimeoutCutsFullAttn(t *testing.T) {
	cfg := testConfig()
	cfg.ShutdownTimeout = 200 * time.Millisecond
	fake := longFake(10 * time.Millisecond)
	addr, sigterm, result, s := runServer(t, cfg, loadFake(fake))
	testkit.Eventually(t, waitLimit, "model ready", func() bool { return s.currentEngine() != nil })
	type answer struct {
		resp *http.Response
		err  error
	}
	answers := make(chan answer, 1)
	go func() {
		resp, err := http.Post(addr+"/inspect/full_attn", "application/json",
			strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"trace_layer":0,"head":0,"max_new_tokens":1000}`))
		answers <- answer{resp, err}
	}()
	testkit.Eventually(t, waitLimit, "the generation to start", func() bool { return fake.steps.Load() > 0 })
	sigterm()
	a := <-answers
	if a.err != nil {
		t.Fatal(a.err)
	}
	resp := a.resp
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"code":"shutting_down"`) {
		t.Fatalf("cut full_attn answered %d %s", resp.StatusCode, body)
	}
	if err := <-result; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// While the model loads, the server already answers: /health says not
// ready and POSTs get 503 model_loading; then it serves.
func TestBackgroundLoad(t *testing.T) {
	release := make(chan struct{})
	fake := newFakeEngine()
	addr, _, _, _ := runServer(t, testConfig(), func(ctx context.Context) (Engine, error) {
		select {
		case <-release:
			return fake, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	resp, err := http.Get(addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	if body := strings.TrimSpace(string(readAll(t, resp))); body != `{"model_ready":false,"ok":true}` {
		t.Fatalf("health while loading: %s", body)
	}
	wantError(t, postJSON(t, addr+"/chat/stream", helloChat), 503, "model_loading", "Model not ready yet, please retry")
	close(release)
	testkit.Eventually(t, waitLimit, "model ready", func() bool {
		resp, err := http.Get(addr + "/health")
		return err == nil && strings.Contains(string(readAll(t, resp)), `"model_ready":true`)
	})
	if events := readEvents(t, postJSON(t, addr+"/chat/stream", helloChat)); events[len(events)-1].Type != "done" {
		t.Fatal("not served after loading")
	}
}

// A load failure ends Run with the cause, so the process exits non-zero.
func TestLoadFailureEndsRun(t *testing.T) {
	_, _, result, _ := runServer(t, testConfig(), func(context.Context) (Engine, error) {
		return nil, errors.New("model.gguf: not a niels-gpt GGUF")
	})
	if err := runReturned(t, result); err == nil || !strings.Contains(err.Error(), "not a niels-gpt GGUF") {
		t.Fatalf("Run returned %v", err)
	}
	// A panicking loader is a load failure too, not a crash.
	_, _, result, _ = runServer(t, testConfig(), func(context.Context) (Engine, error) {
		var m map[string]int
		m["x"] = 1
		return nil, nil
	})
	if err := <-result; err == nil || !strings.Contains(err.Error(), "panic while loading") {
		t.Fatalf("Run returned %v", err)
	}
}

// SIGTERM while the model is still loading stops the load and exits cleanly.
func TestShutdownWhileLoading(t *testing.T) {
	_, sigterm, result, _ := runServer(t, testConfig(), func(ctx context.Context) (Engine, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	sigterm()
	if err := runReturned(t, result); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// With DRAIN_DELAY, SIGTERM first makes /readyz answer 503 while the
// server goes on accepting and serving, so a load balancer can take the
// replica out before its listener closes; then the drain proceeds as usual.
func TestDrainDelayKeepsServingWhileNotReady(t *testing.T) {
	cfg := testConfig()
	cfg.DrainDelay = 700 * time.Millisecond
	addr, sigterm, result, _ := runServer(t, cfg, loadFake(newFakeEngine()))
	readyz := func() (int, string) {
		resp, err := http.Get(addr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		return resp.StatusCode, string(readAll(t, resp))
	}
	testkit.Eventually(t, waitLimit, "ready", func() bool { status, _ := readyz(); return status == 200 })
	signalled := time.Now()
	sigterm()
	testkit.Eventually(t, waitLimit, "/readyz to answer 503 draining", func() bool {
		status, body := readyz()
		return status == 503 && strings.Contains(body, `"draining":true`)
	})
	// Still serving, new connections included.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(addr + "/livez")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/livez during the drain delay: %v %v", err, resp)
	}
	readAll(t, resp)
	if events := readEvents(t, postJSON(t, addr+"/chat/stream", helloChat)); events[len(events)-1].Type != "done" {
		t.Fatal("a stream during the drain delay did not finish")
	}
	if err := runReturned(t, result); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if elapsed := time.Since(signalled); elapsed < cfg.DrainDelay {
		t.Fatalf("Run returned %v after the signal, before the drain delay of %v", elapsed, cfg.DrainDelay)
	}
	if _, err := client.Get(addr + "/livez"); err == nil {
		t.Fatal("still accepting after the drain")
	}
}

var _ Engine = (*engine.Model)(nil) // the real model satisfies the interface
