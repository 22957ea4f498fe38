//go:build linux

package reliability

// Faults against the real binary (docs/RELIABILITY.md, "Faults"): SIGTERM with
// live streams, clients that vanish mid-stream, and clients that stop reading.
// The server package proves the same mechanisms in-process against a fake
// engine; these prove that the process users run, with the real engine,
// behaves that way from the outside.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nielsgpt/internal/harness"
	"nielsgpt/internal/testkit"
)

// SIGTERM while streams are live: the listener closes at once (new
// connections are refused while the old streams go on), streams that can
// finish within SHUTDOWN_TIMEOUT end with `done`, the rest are cut with a
// `shutting_down` error event, every response ends cleanly, and the process
// exits 0 within the drain timeout.
func TestSIGTERMDrainsLiveStreams(t *testing.T) {
	const drain = 8 * time.Second
	s := startServer(t, harness.Spec{Env: []string{"SHUTDOWN_TIMEOUT=" + drain.String()}})

	type stream struct {
		maxNew int
		end    StreamEnd
		// afterTerm counts events that arrived after SIGTERM was sent.
		afterTerm int
	}
	streams := []*stream{{maxNew: 24}, {maxNew: 24}, {maxNew: 1024}, {maxNew: 1024}, {maxNew: 1024}}
	var (
		mu       sync.Mutex
		termSent bool
		started  sync.WaitGroup
		finished sync.WaitGroup
	)
	for i, st := range streams {
		started.Add(1)
		finished.Add(1)
		first := sync.OnceFunc(started.Done)
		go func() {
			defer finished.Done()
			defer first() // a stream that fails before its first token must not hang the test
			st.end = PostStream(context.Background(), ClientFrom(LoopbackIP(i)), s.URL+"/chat/stream",
				ChatBody(fmt.Sprintf("tell me a story %d", i), st.maxNew, 0, int64(i)), StreamOptions{
					OnEvent: func(string) {
						first()
						mu.Lock()
						if termSent {
							st.afterTerm++
						}
						mu.Unlock()
					},
				})
		}()
	}
	started.Wait()
	if active := scrape(t, s).Get("nielsgpt_active_streams"); active != float64(len(streams)) {
		t.Fatalf("%v active streams before SIGTERM, want %d", active, len(streams))
	}

	mu.Lock()
	termSent = true
	mu.Unlock()
	termAt := time.Now()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	firstRefused, accepted, probes := probeUntilExit(t, s, termAt)
	code, err := s.WaitExit(drain + 10*time.Second)
	exitedAt := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	finished.Wait()

	if firstRefused.IsZero() || firstRefused.Sub(termAt) > time.Second {
		t.Errorf("new connections still accepted %v after SIGTERM (%d accepted, %d probes)", firstRefused.Sub(termAt), accepted, probes)
	}
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if took := exitedAt.Sub(termAt); took > drain+5*time.Second {
		t.Errorf("took %s to exit; SHUTDOWN_TIMEOUT is %s", took, drain)
	}
	doneAfterTerm, liveAfterRefusal := 0, 0
	for i, st := range streams {
		e := st.end
		t.Logf("stream %d (max %d): status %d, %d tokens, final %q, %d events after SIGTERM, clean %v, err %v",
			i, st.maxNew, e.Status, e.Tokens, e.Final, st.afterTerm, e.Clean, e.Err)
		if e.Status != 200 || !e.Clean || (e.Final != "done" && e.Final != "error:shutting_down") {
			t.Errorf("stream %d did not end cleanly with done or shutting_down", i)
		}
		if st.maxNew == 1024 && e.Final != "error:shutting_down" {
			t.Errorf("stream %d of 1024 tokens ended with %q inside the drain", i, e.Final)
		}
		if e.Final == "done" && st.afterTerm > 0 {
			doneAfterTerm++
		}
		if !firstRefused.IsZero() && e.LastEvent.After(firstRefused) {
			liveAfterRefusal++
		}
	}
	// The drain let streams run to their end, and the refusals above
	// happened while streams were still being served.
	if doneAfterTerm == 0 {
		t.Error("no stream finished with done during the drain")
	}
	if liveAfterRefusal == 0 {
		t.Error("no stream was still live when new connections were refused")
	}
	if !strings.Contains(s.Output(), `"msg":"stopped"`) {
		t.Error("no stopped log line")
	}
}

// probeUntilExit dials the server every 100 ms until its process is gone:
// new connections must be refused from (almost) the moment of the signal
// until then. It returns when a connection was first refused (zero if none
// was), how many were accepted and how many probes ran; a connection
// accepted after one was refused fails the test.
func probeUntilExit(t *testing.T, s *harness.Server, termAt time.Time) (firstRefused time.Time, accepted, probes int) {
	t.Helper()
	for {
		select {
		case <-s.Exited():
			return firstRefused, accepted, probes
		case <-time.After(100 * time.Millisecond):
		}
		conn, err := net.DialTimeout("tcp", s.Addr, time.Second)
		probes++
		if err == nil {
			conn.Close()
			if !firstRefused.IsZero() {
				t.Errorf("a connection was accepted %s after SIGTERM, after one had been refused", time.Since(termAt))
			}
			accepted++
			continue
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("probe: %v (want connection refused)", err)
		}
		if firstRefused.IsZero() {
			firstRefused = time.Now()
		}
	}
}

// goroutines reads the server's goroutine count (the Go collector's
// go_goroutines).
func goroutines(t *testing.T, s *harness.Server) float64 {
	return scrape(t, s).Get("go_goroutines")
}

// settleGoroutines waits until the server's goroutine count stops changing
// and returns it.
func settleGoroutines(t *testing.T, s *harness.Server) float64 {
	t.Helper()
	g, err := settledGoroutines(s, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Clients that hang up mid-stream: the active-streams gauge and the
// generation slots return to zero, the engine stops working (its token
// counter stands still), and the goroutine count returns to its baseline.
func TestDisconnectMidStreamLeavesNothing(t *testing.T) {
	s := startServer(t, harness.Spec{})
	// Warm up: the first request starts what stays (the engine's scheduler,
	// the HTTP server's pools), which is not a leak.
	if e := PostStream(t.Context(), ClientFrom("127.0.0.1"), s.URL+"/chat/stream", ChatBody("warm up", 4, 0, 1), StreamOptions{}); e.Final != "done" {
		t.Fatalf("warm-up stream: %+v", e)
	}
	baseline := settleGoroutines(t, s)

	const clients = 6
	var wg sync.WaitGroup
	ends := make([]StreamEnd, clients)
	var connected sync.WaitGroup
	connected.Add(clients)
	hangUp := make(chan struct{})
	for i := range clients {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			once := sync.OnceFunc(connected.Done)
			defer once()
			go func() { <-hangUp; cancel() }()
			ends[i] = PostStream(ctx, ClientFrom(LoopbackIP(i)), s.URL+"/chat/stream", ChatBody("talk for a long time", 1024, 3, int64(i)), StreamOptions{
				OnEvent: func(string) { once() },
			})
		})
	}
	connected.Wait()
	m := scrape(t, s)
	if m.Get("nielsgpt_active_streams") != clients || goroutines(t, s) <= baseline {
		t.Fatalf("during the streams: %v active streams, %v goroutines (baseline %v)", m.Get("nielsgpt_active_streams"), goroutines(t, s), baseline)
	}
	close(hangUp) // every client closes its connection mid-stream
	wg.Wait()
	for i, e := range ends {
		if e.Final != "" || e.Status != 200 {
			t.Fatalf("client %d: the stream ended on its own (%+v) before the hang-up", i, e)
		}
	}

	testkit.Eventually(t, 10*time.Second, "active streams and generations back to 0", func() bool {
		m := scrape(t, s)
		return m.Get("nielsgpt_active_streams") == 0 && m.Get("nielsgpt_active_generations") == 0
	})
	// No engine work goes on for clients that left. The handlers give their
	// slots back as soon as the engine lets go of them, which may be while
	// the step already running completes: at most that one step (one token
	// per client) may still be counted after the gauges reach 0.
	atZero := scrape(t, s).Sum("nielsgpt_engine_tokens_total")
	time.Sleep(time.Second)
	settled := scrape(t, s).Sum("nielsgpt_engine_tokens_total")
	time.Sleep(time.Second)
	later := scrape(t, s).Sum("nielsgpt_engine_tokens_total")
	if settled-atZero > clients || later != settled {
		t.Errorf("engine tokens after every client had left: %v at zero, %v a second later, %v after another: work went on", atZero, settled, later)
	}
	var now float64
	testkit.Eventually(t, 10*time.Second, fmt.Sprintf("goroutines back to the baseline %v", baseline), func() bool {
		now = goroutines(t, s)
		return now <= baseline
	})
	t.Logf("goroutines: baseline %v, back to %v", baseline, now)
}

// sendAndStall opens n connections, each from its own loopback address,
// sends body to /chat/stream on each and never reads: clients that stopped
// reading. The connections are closed when the test ends.
func sendAndStall(t *testing.T, s *harness.Server, n int, body string) []*net.TCPConn {
	t.Helper()
	conns := make([]*net.TCPConn, n)
	for i := range conns {
		d := net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(LoopbackIP(100 + i))},
			// A small receive buffer, set before the handshake so the window
			// is negotiated small. Loopback still lets the server queue about
			// 3 MiB per connection in the kernel before a write blocks.
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
				})
				return errors.Join(err, serr)
			},
		}
		c, err := d.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.TCPConn)
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "POST /chat/stream HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", s.Addr, len(body), body)
	}
	return conns
}

// A client that sends its request and then never reads: the server's
// writes block, WRITE_TIMEOUT cuts the stream, the slot, the gauge and the
// goroutines come back, and neither the engine's work nor the server's
// memory grows with what could not be sent: generation pauses once the
// stream's short queue is full.
func TestStalledReaderIsCutAndMemoryStaysBounded(t *testing.T) {
	const (
		writeTimeout = 2 * time.Second
		stalled      = 6
		// streamQueue (server/stream.go) events may wait for the client,
		// plus one in the engine's hand and one being written.
		perStreamSlack = 8 + 2
	)
	s := startServer(t, harness.Spec{Model: wideTraceModel(t), Env: []string{"WRITE_TIMEOUT=" + writeTimeout.String()}})
	// A prompt that fills most of the window: every trace event then
	// carries 32 rows of ~950 probabilities (some 400 KiB of JSON).
	prompt := strings.Repeat("never read me. ", 60)

	// Warm up with the same shape, read to the end, so the engine's compute
	// buffers for six long prompts are already as large as they get: what
	// grows after this is what the stalled clients cost.
	var warm sync.WaitGroup
	for i := range stalled {
		warm.Go(func() {
			if e := PostStream(t.Context(), ClientFrom(LoopbackIP(i)), s.URL+"/chat/stream", ChatBody(prompt, 3, 0, 1), StreamOptions{}); e.Final != "done" {
				t.Errorf("warm-up stream %d: %+v", i, e)
			}
		})
	}
	warm.Wait()
	if t.Failed() {
		t.FailNow()
	}
	baseline := settleGoroutines(t, s)
	rssBefore, _, err := harness.Memory(s.PID())
	if err != nil {
		t.Fatal(err)
	}
	before := scrape(t, s)

	conns := sendAndStall(t, s, stalled, ChatBody(prompt, 1024, 0, 7))
	stalledAt := time.Now()

	// Sample the server's memory while the streams are stuck.
	peak := rssBefore
	var sawActive float64
	cut := time.Time{}
	for time.Since(stalledAt) < writeTimeout+30*time.Second {
		rss, _, err := harness.Memory(s.PID())
		if err != nil {
			t.Fatal(err)
		}
		peak = max(peak, rss)
		active := scrape(t, s).Get("nielsgpt_active_streams")
		sawActive = max(sawActive, active)
		if sawActive == stalled && active == 0 {
			cut = time.Now()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if sawActive != stalled {
		t.Fatalf("only %v of %d stalled streams were ever active", sawActive, stalled)
	}
	if cut.IsZero() {
		t.Fatalf("stalled streams still active %s after they stopped reading (WRITE_TIMEOUT %s)", time.Since(stalledAt), writeTimeout)
	}
	took := cut.Sub(stalledAt)
	// A stream can only be cut once a write has blocked for WRITE_TIMEOUT.
	if took < writeTimeout {
		t.Errorf("streams cut after %s, before WRITE_TIMEOUT %s: cut for something else?", took, writeTimeout)
	}

	// What the clients can still read ends without `done`: the server cut
	// the response rather than finish it. It also tells how much the
	// server managed to send.
	received, receivedBytes := 0, 0
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("stalled client %d: %v after %d bytes (want the server to have closed the connection)", i, err, len(got))
		}
		text := string(got)
		if !strings.HasPrefix(text, "HTTP/1.1 200") || strings.Contains(text, "event: done") {
			t.Errorf("stalled client %d: got %d bytes, starting %q, done=%v", i, len(got), clipText(got), strings.Contains(text, "event: done"))
		}
		received += strings.Count(text, "event: token\n")
		receivedBytes += len(got)
	}
	after := scrape(t, s)
	// Tokens the engine evaluated beyond the prompts: one per generated
	// token (the last one sampled is never fed back).
	decoded := after.Sum("nielsgpt_engine_tokens_total") - before.Sum("nielsgpt_engine_tokens_total") -
		(after.Get("nielsgpt_prompt_tokens_total") - before.Get("nielsgpt_prompt_tokens_total"))
	eventBytes := receivedBytes / max(received, 1)
	t.Logf("cut after %s; clients received %d tokens (%d KiB each event), the engine decoded %v; RSS %d MiB before, peak %d MiB",
		took.Round(10*time.Millisecond), received, eventBytes>>10, decoded, rssBefore>>20, peak>>20)
	if decoded > float64(received+stalled*perStreamSlack) {
		t.Errorf("the engine decoded %v tokens for clients that received %d: it kept generating for clients that did not read", decoded, received)
	}
	// Memory: the queued events, three times over for the garbage
	// collector's headroom and the per-step garbage (attention rows, JSON),
	// and 32 MiB for everything else. Generating on at the pace above with
	// nowhere to send would cost hundreds of MiB in the same time.
	if grow, limit := peak-rssBefore, int64(3*stalled*perStreamSlack*eventBytes+32<<20); grow > limit {
		t.Errorf("RSS grew by %d MiB (limit %d MiB) while %d clients did not read", grow>>20, limit>>20, stalled)
	}
	testkit.Eventually(t, 10*time.Second, "goroutines back to the baseline", func() bool { return goroutines(t, s) <= baseline })
	if g := scrape(t, s).Get("nielsgpt_active_generations"); g != 0 {
		t.Errorf("%v generation slots still taken", g)
	}
}
