package server

// STREAM_PACE_MS over the real engine: steps leave the writer at least the
// pace apart (and `done` after the last trace), a stream on a server without
// a pace keeps its speed while a paced one shares the engine, and a client
// that leaves during a pause stops the generation.

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nielsgpt/engine"
	"nielsgpt/internal/testkit"
)

func TestStreamPaceSetting(t *testing.T) {
	if c := DefaultConfig(); c.StreamPace != 0 {
		t.Fatalf("default STREAM_PACE_MS is %v, want 0", c.StreamPace)
	}
	c, err := parseConfig(nil, testkit.EnvLookup(map[string]string{"STREAM_PACE_MS": "40"}), io.Discard)
	if err != nil || c.StreamPace != 40*time.Millisecond {
		t.Fatalf("STREAM_PACE_MS=40: %v %v", c.StreamPace, err)
	}
	c, err = parseConfig([]string{"--stream-pace-ms", "33"}, testkit.EnvLookup(map[string]string{"STREAM_PACE_MS": "40"}), io.Discard)
	if err != nil || c.StreamPace != 33*time.Millisecond {
		t.Fatalf("--stream-pace-ms 33 over STREAM_PACE_MS=40: %v %v", c.StreamPace, err)
	}
	for _, bad := range []string{"-1", "1001", "30ms", "x"} {
		_, err := parseConfig(nil, testkit.EnvLookup(map[string]string{"STREAM_PACE_MS": bad}), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "STREAM_PACE_MS") || !strings.Contains(err.Error(), "[0, 1000]") {
			t.Errorf("STREAM_PACE_MS=%s: error %v, want one naming the setting and its range", bad, err)
		}
	}
}

// writeLog records when each write to the client began and what it held.
type writeLog struct {
	http.ResponseWriter
	mu     sync.Mutex
	writes []timedWrite
}

type timedWrite struct {
	at   time.Time
	data string
}

func (w *writeLog) Write(b []byte) (int, error) {
	w.mu.Lock()
	w.writes = append(w.writes, timedWrite{time.Now(), string(b)})
	w.mu.Unlock()
	return w.ResponseWriter.Write(b)
}

// Unwrap lets the stream reach net/http's own writer for flushes and
// deadlines; its writes still come through Write via gin's writer.
func (w *writeLog) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func TestStreamPaceSpacesSteps(t *testing.T) {
	eng := loadTinyModel(t)
	const pace = 25 * time.Millisecond
	cfg := testConfig()
	cfg.StreamPace = pace
	s := newServer(t, cfg, eng)
	var logged *writeLog
	var mu sync.Mutex
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wl := &writeLog{ResponseWriter: w}
		mu.Lock()
		logged = wl
		mu.Unlock()
		s.Handler().ServeHTTP(wl, r)
	}))
	t.Cleanup(ts.Close)

	const steps = 12
	began := time.Now()
	events := readEvents(t, postJSON(t, ts.URL+"/chat/stream",
		`{"messages":[{"role":"user","content":"hi"}],"max_new_tokens":12,"temperature":1.5,"top_k":null,"seed":3,"trace_layer":0}`))
	took := time.Since(began)
	if len(events) != 2*steps+1 || events[len(events)-1].Type != "done" {
		t.Fatalf("%d events, want %d steps and done", len(events), steps)
	}
	// Each step is one write (token and trace together), then done.
	mu.Lock()
	writes := logged.writes
	mu.Unlock()
	if len(writes) != steps+1 {
		t.Fatalf("%d writes, want one per step and one for done", len(writes))
	}
	for i := 1; i < len(writes); i++ {
		if gap := writes[i].at.Sub(writes[i-1].at); gap < pace {
			t.Errorf("write %d (%.40q) began %v after the one before, want at least %v", i, writes[i].data, gap, pace)
		}
	}
	if !strings.HasPrefix(writes[steps].data, "event: done") {
		t.Fatalf("last write is %.40q, want done", writes[steps].data)
	}
	// Seen from the client too: 12 pauses (11 between steps, one before done).
	if took < steps*pace {
		t.Fatalf("the stream took %v, less than %d pauses of %v", took, steps, pace)
	}
}

// TestStreamPaceKeepsOtherStreamsFast runs an unpaced stream alone, then
// beside a paced stream on the same engine (two servers over one model: the
// pace is a server setting). Had the pause reached the engine, every batch
// would wait for the paced reader and the unpaced stream would fall to the
// paced one's rate.
func TestStreamPaceKeepsOtherStreamsFast(t *testing.T) {
	eng := loadTinyModel(t)
	pacedCfg := testConfig()
	pacedCfg.StreamPace = 40 * time.Millisecond
	paced := startServer(t, pacedCfg, eng)
	unpaced := startServer(t, testConfig(), eng)

	const n = 200
	run := func() time.Duration {
		began := time.Now()
		events := readEvents(t, postJSON(t, unpaced.URL+"/chat/stream",
			`{"messages":[{"role":"user","content":"hi"}],"max_new_tokens":200,"temperature":1.5,"top_k":null,"seed":11,"trace_layer":0}`))
		if len(events) != 2*n+1 {
			t.Fatalf("unpaced stream: %d events, want %d steps and done", len(events), n)
		}
		return time.Since(began)
	}
	run() // warm: graphs built, pages touched
	alone := min(run(), run())

	// The paced stream: 100 steps at 40 ms, four seconds, started first.
	resp := postJSON(t, paced.URL+"/chat/stream",
		`{"messages":[{"role":"user","content":"hi"}],"max_new_tokens":100,"temperature":1.5,"top_k":null,"seed":5,"trace_layer":0}`)
	defer resp.Body.Close()
	pacedSteps := make(chan struct{}, 1000)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if sc.Text() == "event: token" {
				pacedSteps <- struct{}{}
			}
		}
		close(pacedSteps)
	}()
	<-pacedSteps // it is running
	beside := run()
	stillPaced := len(pacedSteps) < 99
	t.Logf("%d unpaced tokens: %v alone, %v beside a stream paced at %v (%.2fx)",
		n, alone, beside, pacedCfg.StreamPace, float64(beside)/float64(alone))
	if !stillPaced {
		t.Fatal("the paced stream ended before the unpaced one did: the pace did not hold")
	}
	// At the paced rate, 200 tokens would take 8 s; a quarter of that
	// leaves room for a busy machine and still fails a stalled engine.
	if limit := n * pacedCfg.StreamPace / 4; beside > limit {
		t.Fatalf("beside a paced stream, %d tokens took %v (alone %v): over %v", n, beside, alone, limit)
	}
}

// stepCounter wraps an engine to see how many steps it hands the writer and
// when Generate returns.
type stepCounter struct {
	Engine
	steps    atomic.Int32
	returned chan time.Time
}

func (e *stepCounter) Generate(ctx context.Context, req engine.GenerateRequest, onStep func(*engine.Step) error) (*engine.Result, error) {
	defer func() { e.returned <- time.Now() }()
	return e.Engine.Generate(ctx, req, func(s *engine.Step) error {
		e.steps.Add(1)
		return onStep(s)
	})
}

func TestStreamPaceDisconnectStopsGeneration(t *testing.T) {
	eng := &stepCounter{Engine: loadTinyModel(t), returned: make(chan time.Time, 1)}
	cfg := testConfig()
	cfg.StreamPace = maxStreamPace
	ts := startServer(t, cfg, eng)

	resp := postJSON(t, ts.URL+"/chat/stream",
		`{"messages":[{"role":"user","content":"hi"}],"max_new_tokens":500,"temperature":1.5,"top_k":null,"seed":2,"trace_layer":0}`)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for tokens := 0; tokens < 2 && sc.Scan(); {
		if sc.Text() == "event: token" {
			tokens++
		}
	}
	// The second step has just gone out: the writer is in a one-second pause.
	left := time.Now()
	resp.Body.Close()
	select {
	case at := <-eng.returned:
		if waited := at.Sub(left); waited >= maxStreamPace {
			t.Fatalf("generation ended %v after the client left: it sat out the pause", waited)
		}
	case <-time.After(waitLimit):
		t.Fatalf("generation still running %v after the client left", waitLimit)
	}
	// The writer took two steps; the engine may have had two more computed.
	if got := eng.steps.Load(); got > 3 {
		t.Fatalf("the writer was handed %d steps after a client that read 2 left", got)
	}
}

// BenchmarkStreamBesidePacedStream measures what a paced stream costs the
// others: one unpaced 128-token stream at a time, alone and while another
// stream on the same engine is paced at 33 ms (about two frames), on the
// demo model. The ratio of the two tokens/s is what docs/BENCHMARKS.md
// records.
func BenchmarkStreamBesidePacedStream(b *testing.B) {
	eng := loadDemoModel(b)
	serve := func(cfg Config) string {
		ts := httptest.NewServer(newServer(b, cfg, eng).Handler())
		b.Cleanup(ts.Close)
		return ts.URL
	}
	pacedCfg := testConfig()
	pacedCfg.StreamPace = 33 * time.Millisecond
	paced, unpaced := serve(pacedCfg), serve(testConfig())
	const body = `{"messages":[{"role":"user","content":"tell me about niels"}],"max_new_tokens":128,"temperature":1.5,"top_k":null,"seed":14,"trace_layer":0}`

	stream := func(ctx context.Context, url string) int {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/chat/stream", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0 // the paced stream, cancelled
		}
		defer resp.Body.Close()
		n := 0
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if sc.Text() == "event: token" {
				n++
			}
		}
		return n
	}
	measure := func(b *testing.B) {
		tokens := 0
		for b.Loop() {
			tokens += stream(context.Background(), unpaced)
		}
		b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
	}
	stream(context.Background(), unpaced) // warm: graphs built, pages touched
	b.Run("alone", measure)
	b.Run("beside_paced", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			for ctx.Err() == nil {
				stream(ctx, paced) // about 4 s each, one after another
			}
		})
		defer func() { cancel(); wg.Wait() }()
		time.Sleep(100 * time.Millisecond) // the paced stream is under way
		measure(b)
	})
}
