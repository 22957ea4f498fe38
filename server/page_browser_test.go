package server

// The inspector page in a real headless Chromium (Debian's `chromium`,
// driven over the DevTools protocol by chromedp), against this server and
// the embedded demo model. Every number the page shows is checked against
// the bytes the server sent it: a recorder between the browser and the
// server keeps each request and response, and the page's canvases are read
// back pixel by pixel. Throughout, the browser must log no error and send
// no request to any origin but the server's.
//
// NIELSGPT_SCREENSHOTS=1 also writes the screenshots in docs/img that the
// README shows.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"nielsgpt/engine"
	"nielsgpt/models/demo"
	"nielsgpt/modelsource"
)

// chromiumPath finds the browser, or fails the test saying how to get one:
// these tests never skip.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the inspector page's tests need Chromium: install Debian's `chromium` (apt-get install -y chromium; .ci/run does) or set CHROMIUM to a Chrome/Chromium binary")
	return ""
}

func loadDemoModel(t testing.TB) *engine.Model {
	t.Helper()
	cfg := modelsource.DefaultConfig()
	cfg.Model = modelsource.DemoModelName
	cfg.Threads = 1
	model, _, err := modelsource.Load(context.Background(), cfg, modelsource.Options{Demo: func() []byte { return demo.GGUF }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(model.Close)
	return model
}

// exchange is one request the browser made and the server's whole answer.
type exchange struct {
	method, path, query string
	request             []byte
	status              int
	response            bytes.Buffer
}

// recorder sits between the browser and the server and keeps every exchange.
type recorder struct {
	mu        sync.Mutex
	exchanges []*exchange
}

type recordingWriter struct {
	http.ResponseWriter
	rec *recorder
	ex  *exchange
}

func (w *recordingWriter) WriteHeader(code int) {
	w.rec.mu.Lock()
	w.ex.status = code
	w.rec.mu.Unlock()
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	w.rec.mu.Lock()
	if w.ex.status == 0 {
		w.ex.status = http.StatusOK
	}
	w.ex.response.Write(b)
	w.rec.mu.Unlock()
	return w.ResponseWriter.Write(b)
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (rec *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		ex := &exchange{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, request: body}
		rec.mu.Lock()
		rec.exchanges = append(rec.exchanges, ex)
		rec.mu.Unlock()
		h.ServeHTTP(&recordingWriter{ResponseWriter: w, rec: rec, ex: ex}, r)
	})
}

// seen is a copy of an exchange as it stood when it was read: the server
// may still be writing the answer of one in progress.
type seen struct {
	query             string
	request, response []byte
	status            int
}

// posts are the POSTs to path so far, oldest first.
func (rec *recorder) posts(path string) []seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []seen
	for _, ex := range rec.exchanges {
		if ex.method == http.MethodPost && ex.path == path {
			out = append(out, seen{ex.query, ex.request, bytes.Clone(ex.response.Bytes()), ex.status})
		}
	}
	return out
}

func (rec *recorder) last(t *testing.T, path string) seen {
	t.Helper()
	all := rec.posts(path)
	if len(all) == 0 {
		t.Fatalf("the page made no POST %s", path)
	}
	return all[len(all)-1]
}

// browser is one headless Chromium tab and what it has done wrong so far.
type browser struct {
	ctx     context.Context
	mu      sync.Mutex
	origins map[string]bool
	errors  []string // console errors, exceptions, error log entries
	foreign []string // requests to another origin
	allowed []string // log entries expected by the current test (the refusals it provokes)
	seen    []string // every URL requested, so a test can tell the listener works
}

// allow expects error log entries containing each of texts until the next
// clean: Chromium logs every refused request, and some tests provoke them.
func (b *browser) allow(texts ...string) {
	b.mu.Lock()
	b.allowed = append(b.allowed, texts...)
	b.mu.Unlock()
}

func startBrowser(t *testing.T, origins ...string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("force-device-scale-factor", "1"),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	ctx, cancelTime := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelTime(); cancel(); cancelAlloc() })

	b := &browser{ctx: ctx, origins: map[string]bool{}}
	for _, o := range origins {
		b.origins[o] = true
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				b.errors = append(b.errors, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			b.errors = append(b.errors, "exception: "+msg)
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
				b.errors = append(b.errors, fmt.Sprintf("log %s: %s %s", ev.Entry.Level, ev.Entry.Text, ev.Entry.URL))
			}
		case *network.EventRequestWillBeSent:
			b.seen = append(b.seen, ev.Request.URL)
			u, err := url.Parse(ev.Request.URL)
			if err != nil || (u.Scheme != "data" && u.Scheme != "blob" && !b.origins[u.Scheme+"://"+u.Host]) {
				b.foreign = append(b.foreign, ev.Request.URL)
			}
		}
	}); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	// The window's size includes no browser chrome in headless mode, but
	// the viewport is set outright so the screenshots are 1280 × 800.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *browser) run(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// clean fails the test for any browser error or foreign request so far.
func (b *browser) clean(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var unexpected []string
	for _, e := range b.errors {
		if !slices.ContainsFunc(b.allowed, func(a string) bool { return strings.Contains(e, a) }) {
			unexpected = append(unexpected, e)
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("the browser logged errors:\n%s", strings.Join(unexpected, "\n"))
	}
	if len(b.foreign) > 0 {
		t.Errorf("the page sent requests outside its origin: %v", b.foreign)
	}
	b.errors, b.foreign, b.allowed = nil, nil, nil
}

// actionTimeout bounds one browser action: a click on an element that
// never appears fails here, not at the test binary's deadline.
const actionTimeout = 30 * time.Second

// part runs one part of a page test as a subtest, which answers for the
// errors the browser logged during it.
func (b *browser) part(t *testing.T, name string, f func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		defer b.clean(t)
		f(t)
	})
}

// open loads the page from base and waits until it knows the model's shape.
func (b *browser) open(t *testing.T, base string) {
	t.Helper()
	b.run(t, chromedp.Navigate(base+"/"))
	b.waitFor(t, "the model's shape", `document.getElementById('head-grid').children.length > 0`)
}

// eval runs a JavaScript expression in the page and decodes its value.
func (b *browser) eval(t *testing.T, js string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](js))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
}

// waitFor polls a JavaScript condition until it is true. An error shown
// by the page ends the wait at once, unless the test waits for one.
func (b *browser) waitFor(t *testing.T, what, js string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var state struct{ OK, Error bool }
		b.eval(t, fmt.Sprintf(`({OK: !!(%s), Error: !document.getElementById('error').hidden})`, js), &state)
		if state.OK {
			return
		}
		if state.Error && what != "an error" {
			var errText string
			b.eval(t, `document.getElementById('error').textContent`, &errText)
			t.Fatalf("waiting for %s, the page shows an error: %q", what, errText)
		}
		if time.Now().After(deadline) {
			var errText string
			b.eval(t, `document.getElementById('error').textContent`, &errText)
			t.Fatalf("waited a minute for %s (page error: %q)", what, errText)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	if os.Getenv("NIELSGPT_SCREENSHOTS") == "" {
		return
	}
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "docs", "img", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

// fitsWidth fails the test when the page is wider than the window.
func (b *browser) fitsWidth(t *testing.T) {
	t.Helper()
	var got struct{ Overflow, Width int }
	b.eval(t, `({Overflow: document.documentElement.scrollWidth - window.innerWidth, Width: window.innerWidth})`, &got)
	if got.Overflow > 0 {
		t.Fatalf("at %d px the page is %d px too wide", got.Width, got.Overflow)
	}
}

// setField replaces an input's (or a select's) value.
func setField(sel, value string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).value = %q, undefined`, sel, value))
}

func setChecked(sel string, on bool) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).checked = %v, undefined`, sel, on))
}

func click(sel string) chromedp.Action[chromedp.Void] { return chromedp.Click(chromedp.CSS(sel)) }

// sseStep is one step of a recorded stream.
type sseStep struct {
	Token struct {
		Step         int    `json:"step"`
		TokenID      int    `json:"token_id"`
		TokenDisplay string `json:"token_display"`
	}
	Trace struct {
		Step    int     `json:"step"`
		Entropy float64 `json:"entropy"`
		TopK    []struct {
			TokenID      int     `json:"token_id"`
			TokenDisplay string  `json:"token_display"`
			Prob         float64 `json:"prob"`
		} `json:"topk"`
		Attn   [][]float64 `json:"attn"`
		Layers []struct {
			Layer int         `json:"layer"`
			Attn  [][]float64 `json:"attn"`
		} `json:"layers"`
		Lens []struct {
			Layer   int     `json:"layer"`
			Entropy float64 `json:"entropy"`
			TopK    []struct {
				TokenDisplay string  `json:"token_display"`
				Prob         float64 `json:"prob"`
			} `json:"topk"`
		} `json:"lens"`
	}
}

// parseStream splits a recorded /chat/stream answer into its steps and
// whether it ended with done.
func parseStream(t *testing.T, raw []byte) (steps []sseStep, done bool) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 16<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data := []byte(line[len("data: "):])
			switch event {
			case "token":
				steps = append(steps, sseStep{})
				if err := json.Unmarshal(data, &steps[len(steps)-1].Token); err != nil {
					t.Fatal(err)
				}
			case "trace":
				if err := json.Unmarshal(data, &steps[len(steps)-1].Trace); err != nil {
					t.Fatal(err)
				}
			case "done":
				done = true
			}
		}
	}
	return steps, done
}

// seedFor256 finds a seed with which the demo model writes max_new_tokens
// tokens without reaching a stop tag, so the stream is as long as asked.
func seedFor256(t *testing.T, eng Engine, chat []engine.Message) int {
	t.Helper()
	for seed := 1; seed <= 40; seed++ {
		n := 0
		_, err := eng.Generate(context.Background(), engine.GenerateRequest{
			Messages: chat, MaxNewTokens: 256, TraceLayer: -1,
			Sampling: engine.Sampling{Temperature: 1.5, Seed: int64(seed)},
		}, func(*engine.Step) error { n++; return nil })
		if err != nil {
			t.Fatal(err)
		}
		if n == 256 {
			return seed
		}
	}
	t.Fatal("no seed in 1..40 gives 256 demo tokens at temperature 1.5")
	return 0
}

// canvasCells reads back a canvas's cells: the red channel at the centre of
// each cell of a grid with cell size data-cell, offset data-left/data-top.
const canvasCellsJS = `(() => {
  const c = document.querySelector(%q);
  const z = +c.dataset.cell, left = +(c.dataset.left || 0), top = +(c.dataset.top || 0);
  const cols = Math.floor((c.width - left) / z), rows = %d || Math.floor((c.height - top) / z);
  const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const out = [];
  for (let i = 0; i < rows; i++) {
    const row = [];
    const y = rows === 1 ? Math.floor(c.height / 2) : top + i * z + Math.floor(z / 2);
    for (let j = 0; j < cols; j++) row.push(px[4 * (y * c.width + left + j * z + Math.floor(z / 2))]);
    out.push(row);
  }
  return out;
})()`

// wantHeat checks cells drawn by the page's heat(): red = 255 − round(225·p).
func wantHeat(t *testing.T, what string, reds [][]int, probs [][]float64) {
	t.Helper()
	if len(reds) != len(probs) {
		t.Fatalf("%s: %d rows drawn, want %d", what, len(reds), len(probs))
	}
	for i := range probs {
		if len(reds[i]) != len(probs[i]) {
			t.Fatalf("%s row %d: %d cells drawn, want %d", what, i, len(reds[i]), len(probs[i]))
		}
		for j, p := range probs[i] {
			want := 255 - int(math.Round(225*math.Min(1, math.Max(0, p))))
			if d := reds[i][j] - want; d < -1 || d > 1 {
				t.Fatalf("%s cell [%d][%d]: red %d, want %d for p = %v", what, i, j, reds[i][j], want, p)
			}
		}
	}
}

func TestPageInBrowser(t *testing.T) {
	eng := loadDemoModel(t)
	cfg := testConfig()
	ts, rec := startRecorded(t, cfg, eng)

	// A second server for the refusals: tiny prompt limit, a bucket of
	// three, and a pace slow enough to press Stop in the middle of a reply.
	strictCfg := testConfig()
	strictCfg.MaxPromptBytes = 300
	strictCfg.RateLimitBurst = 3
	strictCfg.RateLimitPerMin = 1
	strictCfg.StreamPace = 40 * time.Millisecond
	strictTS, strictRec := startRecorded(t, strictCfg, eng)

	// A third over the fake engine, which writes steps as fast as the
	// server can send them: the page must draw all of them, at speed.
	fast := newFakeEngine()
	fast.reply = strings.Repeat("the quick brown fox jumps over the lazy dog\n", 100)[:4000]
	fastCfg := testConfig()
	fastCfg.MaxNewTokens = len(fast.reply)
	fastTS := startServer(t, fastCfg, fast)

	// And one whose model never finishes loading.
	loadingTS := startServer(t, testConfig(), nil)
	// And one that paces its streams, for a front end that draws once a
	// frame: twice the README's 50 ms, so a busy machine's late frame does
	// not fail the test.
	pacedCfg := testConfig()
	pacedCfg.StreamPace = 100 * time.Millisecond
	pacedTS := startServer(t, pacedCfg, eng)

	b := startBrowser(t, ts.URL, strictTS.URL, fastTS.URL, loadingTS.URL, pacedTS.URL)
	t.Cleanup(func() { b.clean(t) })
	b.open(t, ts.URL)

	const question = "tell me about niels"
	seed := seedFor256(t, eng, []engine.Message{{Role: "user", Content: question}})

	// chat sends one message with the settings given and waits for the end.
	chat := func(t *testing.T, text string, deep bool) {
		t.Helper()
		b.run(t,
			setField("#temperature", "1.5"), setField("#top-k", ""), setField("#seed", fmt.Sprint(seed)),
			setField("#max-tokens", "256"), setChecked("#all-layers", deep), setChecked("#logit-lens", deep),
			setField("#prompt", text), click("#send"))
		b.waitFor(t, "the reply", `!document.getElementById('send').disabled && document.querySelectorAll('.reply-text').length > 0`)
	}

	var steps []sseStep
	b.part(t, "every token becomes a box", func(t *testing.T) {
		began := time.Now()
		chat(t, question, false)
		took := time.Since(began)
		var done bool
		steps, done = parseStream(t, rec.last(t, "/chat/stream").response)
		if !done || len(steps) != 256 {
			t.Fatalf("the stream had %d steps (done %v), want 256", len(steps), done)
		}
		var boxes []string
		b.eval(t, `[...document.querySelectorAll('#transcript .reply .tok')].map(b => b.textContent)`, &boxes)
		if len(boxes) != len(steps) {
			t.Fatalf("%d token boxes for %d token events", len(boxes), len(steps))
		}
		for i, st := range steps {
			if boxes[i] != st.Token.TokenDisplay {
				t.Fatalf("box %d shows %q, the event's token_display is %q", i, boxes[i], st.Token.TokenDisplay)
			}
		}
		t.Logf("256 tokens streamed and drawn in %v", took)
		b.mu.Lock()
		defer b.mu.Unlock()
		if !slices.Contains(b.seen, ts.URL+"/chat/stream") {
			t.Fatalf("the network listener did not see the stream's request: %v", b.seen)
		}
	})

	b.part(t, "a selected token shows its trace", func(t *testing.T) {
		const pick = 200 // its window is longer than 128
		b.run(t, click(fmt.Sprintf(`#transcript .reply .tok[data-step="%d"]`, pick)))
		checkTokenPanel(t, b, steps, pick, false)
		// The arrow keys move the selection within the focused reply.
		b.run(t, chromedp.Focus(chromedp.CSS(`#transcript .reply`)), chromedp.KeyEvent(kb.ArrowRight))
		checkTokenPanel(t, b, steps, pick+1, false)
		b.fitsWidth(t)
		b.screenshot(t, "inspector-token.png")
	})

	b.part(t, "every layer and the logit lens", func(t *testing.T) {
		b.run(t, click("#new-chat"))
		chat(t, question, true)
		deep, _ := parseStream(t, rec.last(t, "/chat/stream").response)
		if len(deep) < 130 {
			t.Fatalf("the deep-trace stream had %d steps", len(deep))
		}
		var body map[string]any
		if err := json.Unmarshal(rec.last(t, "/chat/stream").request, &body); err != nil || body["trace_layers"] != "all" || body["logit_lens"] != true {
			t.Fatalf("the page sent %s, want trace_layers \"all\" and logit_lens", rec.last(t, "/chat/stream").request)
		}
		b.run(t, click(`#transcript .reply .tok[data-step="129"]`))
		checkTokenPanel(t, b, deep, 129, true)
		b.screenshot(t, "inspector-token.png")
		b.run(t, chromedp.Evaluate[chromedp.Void](`document.querySelector('.inspector').scrollTop = 1e6, undefined`))
		b.screenshot(t, "inspector-lens.png")
	})

	b.part(t, "ablation marks the tokens that changed", func(t *testing.T) {
		b.run(t, click("#tab-ablate"))
		for _, h := range []string{"0.0", "0.1", "0.2", "0.3"} {
			b.run(t, click(fmt.Sprintf(`#head-grid button[data-key="%s"]`, h)))
		}
		before := len(rec.posts("/chat/stream"))
		b.run(t, click("#rerun"))
		b.waitFor(t, "the ablated reply", `document.getElementById('ablate-summary').textContent !== ''`)
		all := rec.posts("/chat/stream")
		if len(all) != before+1 {
			t.Fatalf("re-run made %d requests", len(all)-before)
		}
		var body struct {
			Ablate []struct{ Layer, Head int } `json:"ablate"`
			Seed   int                         `json:"seed"`
		}
		if err := json.Unmarshal(all[len(all)-1].request, &body); err != nil {
			t.Fatal(err)
		}
		if len(body.Ablate) != 4 || body.Seed != seed {
			t.Fatalf("re-run sent %s, want the 4 heads of layer 0 and seed %d", all[len(all)-1].request, seed)
		}
		for i, a := range body.Ablate {
			if a.Layer != 0 || a.Head != i {
				t.Fatalf("re-run sent ablate %+v", body.Ablate)
			}
		}
		original, _ := parseStream(t, all[len(all)-2].response)
		ablated, done := parseStream(t, all[len(all)-1].response)
		if !done {
			t.Fatal("the ablated stream did not finish")
		}
		var marked []bool
		b.eval(t, `[...document.querySelectorAll('#reply-b .tok')].map(b => b.classList.contains('changed'))`, &marked)
		if len(marked) != len(ablated) {
			t.Fatalf("%d boxes for %d ablated steps", len(marked), len(ablated))
		}
		changed := 0
		for i := range ablated {
			want := i >= len(original) || original[i].Token.TokenID != ablated[i].Token.TokenID
			if marked[i] != want {
				t.Fatalf("step %d marked changed = %v, want %v", i, marked[i], want)
			}
			if want {
				changed++
			}
		}
		if changed == 0 {
			t.Fatal("switching off all of layer 0 changed nothing: the test proves nothing")
		}
		b.screenshot(t, "inspector-ablation.png")
	})

	b.part(t, "the matrix equals /inspect/attention", func(t *testing.T) {
		b.run(t, click("#clear-ablate"), click("#tab-matrix"),
			setField("#matrix-layer", "1"), setField("#matrix-head", "2"),
			setField("#matrix-zoom", "4"), click("#matrix-load"))
		b.waitFor(t, "the matrix", `document.getElementById('matrix').dataset.head === '2' && document.getElementById('matrix').width > 0`)
		ex := rec.last(t, "/inspect/attention")
		var got struct {
			Layers []int           `json:"layers"`
			Attn   [][][][]float64 `json:"attn"`
		}
		if err := json.Unmarshal(ex.response, &got); err != nil || ex.status != http.StatusOK {
			t.Fatalf("/inspect/attention answered %d: %.200s", ex.status, ex.response)
		}
		if len(got.Layers) != 1 || got.Layers[0] != 1 {
			t.Fatalf("the page asked for layers %v, want [1]", got.Layers)
		}
		m := got.Attn[0][2]
		if len(m) <= 128 {
			t.Fatalf("the window is %d tokens, want more than 128", len(m))
		}
		var reds [][]int
		b.eval(t, fmt.Sprintf(canvasCellsJS, "#matrix", 0), &reds)
		wantHeat(t, "matrix", reds, m)
		b.run(t, setField("#matrix-zoom", "12"),
			chromedp.Evaluate[chromedp.Void](`document.getElementById('matrix-zoom').dispatchEvent(new Event('change')), undefined`))
		b.screenshot(t, "inspector-matrix.png")

		b.run(t, click("#matrix-npz"))
		deadline := time.Now().Add(30 * time.Second)
		for {
			var npz *seen
			for _, e := range rec.posts("/inspect/attention") {
				if e.query == "format=npz" {
					npz = &e
				}
			}
			if npz != nil && npz.status == http.StatusOK && bytes.HasPrefix(npz.response, []byte("PK")) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the .npz download did not happen")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	b.part(t, "how the model reads a text", func(t *testing.T) {
		b.run(t, click("#tab-score"), click("#score-from-chat"))
		b.waitFor(t, "the scores", `document.getElementById('score-summary').textContent !== ''`)
		ex := rec.last(t, "/inspect/score")
		var asked struct{ Messages []engine.Message }
		if err := json.Unmarshal(ex.request, &asked); err != nil || len(asked.Messages) != 2 || asked.Messages[0].Content != question {
			t.Fatalf("the page asked to score %s, want the conversation's messages", ex.request)
		}
		var got struct {
			TokensDisplay []string `json:"tokens_display"`
			Scores        []*struct {
				Logprob *float64 `json:"logprob"` // null: probability 0
			} `json:"scores"`
			BitsPerByte float64 `json:"bits_per_byte"`
		}
		if err := json.Unmarshal(ex.response, &got); err != nil {
			t.Fatalf("/inspect/score answered %d: %.200s", ex.status, ex.response)
		}
		var shown struct {
			Summary string
			Bits    []string
		}
		b.eval(t, `({Summary: document.getElementById('score-summary').textContent,
			Bits: [...document.querySelectorAll('#score-bytes span')].map(s => s.dataset.bits || '')})`, &shown)
		if !strings.HasPrefix(shown.Summary, fmt.Sprintf("%.3f bits per byte", got.BitsPerByte)) {
			t.Fatalf("summary %q, the server said %v bits per byte", shown.Summary, got.BitsPerByte)
		}
		if len(shown.Bits) != len(got.TokensDisplay) {
			t.Fatalf("%d bytes shown, %d scored", len(shown.Bits), len(got.TokensDisplay))
		}
		for i, sc := range got.Scores {
			if sc == nil {
				continue
			}
			want := "Infinity"
			if sc.Logprob != nil {
				want = fmt.Sprintf("%.4f", -*sc.Logprob/math.Ln2)
			}
			if shown.Bits[i] != want {
				t.Fatalf("byte %d: %s bits shown, want %s", i, shown.Bits[i], want)
			}
		}
		b.screenshot(t, "inspector-score.png")
	})

	b.part(t, "thousands of tokens a second, none dropped", func(t *testing.T) {
		b.open(t, fastTS.URL)
		b.run(t, setField("#max-tokens", "4000"), setChecked("#all-layers", false), setChecked("#logit-lens", false),
			setField("#prompt", "go"))
		began := time.Now()
		b.run(t, click("#send"))
		b.waitFor(t, "the reply", `!document.getElementById('send').disabled && document.querySelectorAll('.reply-text').length > 0`)
		took := time.Since(began)
		var boxes []string
		b.eval(t, `[...document.querySelectorAll('#transcript .reply .tok')].map(b => b.textContent)`, &boxes)
		if len(boxes) != len(fast.reply) {
			t.Fatalf("%d boxes for %d steps", len(boxes), len(fast.reply))
		}
		for i := range boxes {
			if want := tokenDisplayOf(fast.reply[i]); boxes[i] != want {
				t.Fatalf("box %d shows %q, want %q", i, boxes[i], want)
			}
		}
		rate := float64(len(boxes)) / took.Seconds()
		t.Logf("%d tokens streamed and drawn in %v: %.0f tokens/s", len(boxes), took, rate)
		if rate < 1000 {
			t.Fatalf("the page drew %.0f tokens/s, want at least 1000", rate)
		}
	})

	b.part(t, "stop and the server's refusals", func(t *testing.T) {
		b.open(t, strictTS.URL)
		b.run(t, setField("#temperature", "1.5"), setField("#top-k", ""), setField("#seed", fmt.Sprint(seed)),
			setField("#max-tokens", "200"), setChecked("#all-layers", false), setChecked("#logit-lens", false),
			setField("#prompt", question), click("#send"))
		b.waitFor(t, "a few paced tokens", `document.querySelectorAll('#transcript .tok').length >= 5`)
		b.run(t, click("#stop"))
		b.waitFor(t, "the stop", `!document.getElementById('send').disabled`)
		var stopped struct {
			Boxes int
			Text  string
		}
		b.eval(t, `({Boxes: document.querySelectorAll('#transcript .tok').length,
			Text: (document.querySelector('.reply-text') || {}).textContent || ''})`, &stopped)
		received, done := parseStream(t, strictRec.last(t, "/chat/stream").response)
		if done || stopped.Boxes >= 200 || !strings.HasPrefix(stopped.Text, "stopped:") {
			t.Fatalf("after Stop: %d boxes, %q, done %v", stopped.Boxes, stopped.Text, done)
		}
		if stopped.Boxes > len(received) || stopped.Boxes < len(received)-1 {
			// The last step may have been on the wire when the request was aborted.
			t.Fatalf("%d boxes for %d steps sent before the abort", stopped.Boxes, len(received))
		}

		b.allow("status of 413 (Request Entity Too Large)", "status of 422 (Unprocessable Entity)", "status of 429 (Too Many Requests)")
		errorShown := func(t *testing.T) string {
			b.waitFor(t, "an error", `!document.getElementById('error').hidden && !document.getElementById('send').disabled`)
			var text string
			b.eval(t, `document.getElementById('error').textContent`, &text)
			return text
		}
		b.run(t, setField("#prompt", strings.Repeat("long ", 80)), click("#send"))
		if got, want := errorShown(t), "413: Prompt too large:"; !strings.HasPrefix(got, want) {
			t.Fatalf("error %q, want %q…", got, want)
		}
		b.run(t, setField("#temperature", "-1"), setField("#prompt", "hi"), click("#send"))
		var detail struct{ Detail string }
		got := errorShown(t)
		if err := json.Unmarshal(strictRec.last(t, "/chat/stream").response, &detail); err != nil || got != "422: "+detail.Detail {
			t.Fatalf("error %q, want the server's detail %q", got, detail.Detail)
		}
		b.run(t, setField("#temperature", "0.9"), setField("#prompt", "hi"), click("#send"))
		if got := errorShown(t); !strings.HasPrefix(got, "429: Rate limit exceeded (retry in 6") {
			t.Fatalf("error %q, want the 429 with a countdown from Retry-After 60", got)
		}
	})

	b.part(t, "a model still loading", func(t *testing.T) {
		b.allow("status of 503 (Service Unavailable)")
		b.run(t, chromedp.Navigate(loadingTS.URL+"/"))
		b.waitFor(t, "the page", `document.readyState === 'complete'`)
		b.run(t, setChecked("#all-layers", false), setChecked("#logit-lens", false), setField("#prompt", "hi"), click("#send"))
		b.waitFor(t, "an error", `!document.getElementById('error').hidden && !document.getElementById('send').disabled`)
		var shown struct{ Error, Info, Prompt string }
		b.eval(t, `({Error: document.getElementById('error').textContent, Info: document.getElementById('model-info').textContent,
			Prompt: document.getElementById('prompt').value})`, &shown)
		if !strings.HasPrefix(shown.Error, "503: Model not ready yet, please retry (retry in ") {
			t.Fatalf("error %q, want the 503 with a countdown", shown.Error)
		}
		if shown.Info != "loading the model…" || shown.Prompt != "hi" {
			t.Fatalf("while loading: model line %q, message box %q (the refused message goes back there)", shown.Info, shown.Prompt)
		}
	})

	b.part(t, "a client that draws once a frame sees every step only when paced", func(t *testing.T) {
		// Like the original React front end: the newest step is kept in a
		// variable that each animation frame draws, and `done` ends the
		// drawing at once.
		frameClient := fmt.Sprintf(`(async () => {
			const resp = await fetch('/chat/stream', {method: 'POST', headers: {'Content-Type': 'application/json'},
				body: JSON.stringify({messages: [{role: 'user', content: %q}], max_new_tokens: 32,
					temperature: 1.5, top_k: null, seed: %d, trace_layer: 0})});
			const reader = resp.body.getReader(), dec = new TextDecoder();
			let buf = '', latest = -1, streaming = true, steps = 0;
			const drawn = new Set();
			const frame = () => { if (!streaming) return; if (latest >= 0) drawn.add(latest); requestAnimationFrame(frame); };
			requestAnimationFrame(frame);
			for (;;) {
				const {value, done} = await reader.read();
				if (done) break;
				buf += dec.decode(value, {stream: true});
				let cut;
				while ((cut = buf.indexOf('\n\n')) >= 0) {
					const block = buf.slice(0, cut);
					buf = buf.slice(cut + 2);
					if (block.startsWith('event: token')) { latest = JSON.parse(block.split('\ndata: ')[1]).step; steps++; }
					if (block.startsWith('event: done')) streaming = false;
				}
			}
			return {Steps: steps, Drawn: drawn.size, Missed: [...Array(steps).keys()].filter(i => !drawn.has(i))};
		})()`, question, seed)
		run := func(t *testing.T, base string) (steps, drawn int) {
			t.Helper()
			b.open(t, base) // loaded and idle: its own start-up takes no frames
			out, err := chromedp.Run(b.ctx, chromedp.Evaluate[struct {
				Steps, Drawn int
				Missed       []int
			}](frameClient, chromedp.EvalAwaitPromise))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: steps not drawn %v", base, out.Missed)
			return out.Steps, out.Drawn
		}
		steps, drawn := run(t, ts.URL)
		t.Logf("unpaced: %d of %d steps drawn", drawn, steps)
		if steps != 32 || drawn > steps/2 {
			t.Fatalf("unpaced: %d of %d steps drawn; the demo model should be too fast for a once-a-frame client", drawn, steps)
		}
		steps, drawn = run(t, pacedTS.URL)
		t.Logf("paced at %v: %d of %d steps drawn", pacedCfg.StreamPace, drawn, steps)
		if steps != 32 || drawn != steps {
			t.Fatalf("paced at %v: %d of %d steps drawn", pacedCfg.StreamPace, drawn, steps)
		}
	})

	b.part(t, "the page cannot reach another origin", func(t *testing.T) {
		b.open(t, ts.URL)
		b.allow("Refused to connect", "Content Security Policy")
		outcome, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
			`fetch('http://127.0.0.1:9/x', {mode: 'no-cors'}).then(() => 'sent', () => 'blocked')`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		if outcome != "blocked" {
			t.Fatalf("a fetch to another origin was %s", outcome)
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if !slices.ContainsFunc(b.errors, func(e string) bool { return strings.Contains(e, "Content Security Policy") }) {
			t.Fatalf("the fetch failed, but not because of the page's policy: %v", b.errors)
		}
		b.foreign = nil // refused by the policy: it never left
	})

	b.part(t, "every control is labelled and reachable by keyboard", func(t *testing.T) {
		b.open(t, ts.URL)
		var unlabelled []string
		b.eval(t, `[...document.querySelectorAll('input, select, textarea, button, [role=tab]')].filter(el => {
			const name = (el.getAttribute('aria-label') || (el.labels && [...el.labels].map(l => l.textContent).join('')) || el.textContent || '').trim();
			return name === '' || el.tabIndex < -1;
		}).map(el => el.outerHTML.slice(0, 80))`, &unlabelled)
		if len(unlabelled) > 0 {
			t.Fatalf("controls without a name: %v", unlabelled)
		}
		// Tab moves through the composer: the message box, then Send.
		b.run(t, chromedp.Focus(chromedp.CSS("#prompt")), setField("#prompt", "hi"), chromedp.KeyEvent(kb.Tab))
		var focused string
		b.eval(t, `document.activeElement.id`, &focused)
		if focused != "send" {
			t.Fatalf("Tab from the message box went to %q, want the Send button", focused)
		}
		// The tabs follow the arrow keys.
		b.run(t, chromedp.Focus(chromedp.CSS("#tab-token")), chromedp.KeyEvent(kb.ArrowRight))
		b.eval(t, `document.activeElement.id + (document.getElementById('view-ablate').hidden ? ' hidden' : ' shown')`, &focused)
		if focused != "tab-ablate shown" {
			t.Fatalf("ArrowRight on the first tab: %q, want the ablation tab shown", focused)
		}
	})

	b.part(t, "phone width", func(t *testing.T) {
		b.run(t, chromedp.EmulateViewport(390, 844))
		b.open(t, ts.URL)
		chat(t, question, false)
		b.fitsWidth(t)
		b.screenshot(t, "inspector-phone.png")
	})
}

// tokenDisplayOf is token_display for a byte (docs/API.md).
func tokenDisplayOf(b byte) string {
	if b >= 32 && b <= 126 {
		return string(rune(b))
	}
	return fmt.Sprintf("\\x%02x", b)
}

// checkTokenPanel compares the token view with step pick of the stream.
func checkTokenPanel(t *testing.T, b *browser, steps []sseStep, pick int, deep bool) {
	t.Helper()
	st := steps[pick].Trace
	b.waitFor(t, "the selection", fmt.Sprintf(`document.querySelector('.tok.sel') && document.querySelector('.tok.sel').dataset.step === '%d'`, pick))
	var shown struct {
		Entropy string
		Rows    [][]string
		Canvas  []struct{ Layer, Head string }
		Lens    [][]string
	}
	b.eval(t, `({
		Entropy: document.getElementById('entropy').textContent,
		Rows: [...document.querySelectorAll('#candidates tbody tr')].map(r => [...r.cells].slice(0, 3).map(c => c.textContent)),
		Canvas: [...document.querySelectorAll('#attn-grid canvas')].map(c => ({Layer: c.dataset.layer, Head: c.dataset.head})),
		Lens: document.getElementById('lens-section').hidden ? null :
			[...document.querySelectorAll('#lens tbody tr')].map(r => [...r.cells].map(c => c.textContent)),
	})`, &shown)
	if want := fmt.Sprintf("%.4f", st.Entropy); shown.Entropy != want {
		t.Fatalf("step %d: entropy %s shown, the trace says %s", pick, shown.Entropy, want)
	}
	if len(shown.Rows) != len(st.TopK) {
		t.Fatalf("step %d: %d candidates shown, the trace has %d", pick, len(shown.Rows), len(st.TopK))
	}
	for i, c := range st.TopK {
		if shown.Rows[i][0] != c.TokenDisplay || shown.Rows[i][1] != fmt.Sprint(c.TokenID) || shown.Rows[i][2] != fmt.Sprintf("%.4f", c.Prob) {
			t.Fatalf("step %d candidate %d: shown %v, the trace has id %d p %v", pick, i, shown.Rows[i], c.TokenID, c.Prob)
		}
	}
	type strip struct {
		layer int
		attn  [][]float64
	}
	strips := []strip{{0, st.Attn}}
	if deep {
		strips = nil
		for _, l := range st.Layers {
			strips = append(strips, strip{l.Layer, l.Attn})
		}
		if len(strips) == 0 {
			t.Fatal("the deep-trace stream has no layers")
		}
	}
	k := 0
	for _, s := range strips {
		for h, row := range s.attn {
			if k >= len(shown.Canvas) || shown.Canvas[k].Layer != fmt.Sprint(s.layer) || shown.Canvas[k].Head != fmt.Sprint(h) {
				t.Fatalf("step %d: canvas %d is %+v, want layer %d head %d", pick, k, shown.Canvas, s.layer, h)
			}
			var reds [][]int
			b.eval(t, fmt.Sprintf(canvasCellsJS, fmt.Sprintf("#attn-grid canvas:nth-of-type(%d)", k+1), 1), &reds)
			wantHeat(t, fmt.Sprintf("step %d layer %d head %d", pick, s.layer, h), reds, [][]float64{row})
			k++
		}
	}
	if k != len(shown.Canvas) {
		t.Fatalf("step %d: %d canvases, the trace has %d rows", pick, len(shown.Canvas), k)
	}
	if deep {
		if len(shown.Lens) != len(st.Lens) || len(st.Lens) == 0 {
			t.Fatalf("step %d: %d lens rows shown, the trace has %d", pick, len(shown.Lens), len(st.Lens))
		}
		for i, l := range st.Lens {
			if shown.Lens[i][0] != fmt.Sprint(l.Layer) || shown.Lens[i][1] != fmt.Sprintf("%.3f", l.Entropy) ||
				!strings.HasPrefix(shown.Lens[i][2], fmt.Sprintf("%s %.3f", l.TopK[0].TokenDisplay, l.TopK[0].Prob)) {
				t.Fatalf("step %d lens row %d: shown %v, the trace has %+v", pick, i, shown.Lens[i], l)
			}
		}
	} else if shown.Lens != nil {
		t.Fatalf("step %d: a lens is shown for a stream without one", pick)
	}
}

// The page on a generation-2 model (the tiny fixture best.pt with its
// spm.model): token boxes show pieces, the token, matrix and score views
// follow the server's pieces, and a stopped reply is the pieces' text.
func TestPageInBrowserGen2(t *testing.T) {
	model := loadGen2Model(t)
	tok := model.Tokenizer()
	cfg := model.Config()
	ts, rec := startRecorded(t, testConfig(), model)
	// Paced, to press Stop in the middle of a reply.
	pacedCfg := testConfig()
	pacedCfg.StreamPace = 60 * time.Millisecond
	pacedTS, pacedRec := startRecorded(t, pacedCfg, model)

	// A seed whose reply ends at end-of-turn after byte pieces and pieces
	// that begin with a space, so the boxes show every kind of display.
	const question = "hello there"
	chatMsgs := []engine.Message{{Role: "user", Content: question}}
	seed, eotSteps := 0, 0
	for sd := 1; sd <= 60 && seed == 0; sd++ {
		var ids []int
		res, err := model.Generate(context.Background(), engine.GenerateRequest{
			Messages: chatMsgs, MaxNewTokens: 48, TraceLayer: -1,
			Sampling: engine.Sampling{Temperature: 1.5, Seed: int64(sd)},
		}, func(st *engine.Step) error { ids = append(ids, st.TokenID); return nil })
		if err != nil {
			t.Fatal(err)
		}
		bytePiece, spaced := false, false
		for _, id := range ids {
			d := tok.Display(id)
			bytePiece = bytePiece || strings.HasPrefix(tok.Piece(id), "<0x")
			spaced = spaced || strings.HasPrefix(d, " ") && len(d) > 1
		}
		if res.Stopped == "stop_tag" && len(ids) >= 20 && bytePiece && spaced {
			seed, eotSteps = sd, len(ids)
		}
	}
	if seed == 0 {
		t.Fatal("no seed in 1..60 gives a reply that ends at end-of-turn with byte pieces and spaced pieces")
	}

	b := startBrowser(t, ts.URL, pacedTS.URL)
	t.Cleanup(func() { b.clean(t) })
	send := func(t *testing.T, maxTokens int) {
		t.Helper()
		b.run(t,
			setField("#temperature", "1.5"), setField("#top-k", ""), setField("#seed", fmt.Sprint(seed)),
			setField("#max-tokens", fmt.Sprint(maxTokens)), setChecked("#all-layers", true), setChecked("#logit-lens", true),
			setField("#prompt", question), click("#send"))
	}

	b.part(t, "the header says generation 2", func(t *testing.T) {
		b.open(t, ts.URL)
		var info string
		b.eval(t, `document.getElementById('model-info').textContent`, &info)
		want := fmt.Sprintf("generation 2 · %d layers × %d heads · context %d · vocabulary %d", cfg.Layers, cfg.Heads, cfg.Context, cfg.Vocab)
		if info != want {
			t.Fatalf("model line %q, want %q", info, want)
		}
	})

	var steps []sseStep
	var reply string
	b.part(t, "every piece becomes a box", func(t *testing.T) {
		send(t, 48)
		b.waitFor(t, "the reply", `!document.getElementById('send').disabled && document.querySelectorAll('.reply-text').length > 0`)
		ex := rec.last(t, "/chat/stream")
		var done bool
		steps, done = parseStream(t, ex.response)
		if !done || len(steps) != eotSteps {
			t.Fatalf("the stream had %d steps (done %v), the engine wrote %d", len(steps), done, eotSteps)
		}
		var shown struct {
			Boxes []string
			Reply string
		}
		b.eval(t, `({Boxes: [...document.querySelectorAll('#transcript .reply .tok')].map(b => b.textContent),
			Reply: document.querySelector('.reply-text').textContent})`, &shown)
		if len(shown.Boxes) != len(steps) {
			t.Fatalf("%d token boxes for %d token events", len(shown.Boxes), len(steps))
		}
		ids := make([]int, len(steps))
		for i, st := range steps {
			ids[i] = st.Token.TokenID
			if shown.Boxes[i] != st.Token.TokenDisplay || st.Token.TokenDisplay != tok.Display(st.Token.TokenID) {
				t.Fatalf("box %d shows %q, the event's token_display is %q (piece %q)", i, shown.Boxes[i], st.Token.TokenDisplay, tok.Piece(st.Token.TokenID))
			}
		}
		reply = tok.Decode(ids[:len(ids)-1]) // the end-of-turn piece ends it
		if got := shownString(t, shown.Reply, "reply: "); got != reply {
			t.Fatalf("the page says %q, want the reply %q", shown.Reply, reply)
		}
	})

	b.part(t, "a selected piece shows its trace", func(t *testing.T) {
		pick := len(steps) - 2
		b.run(t, click(fmt.Sprintf(`#transcript .reply .tok[data-step="%d"]`, pick)))
		checkTokenPanel(t, b, steps, pick, true)
		var title string
		b.eval(t, `document.getElementById('token-title').textContent`, &title)
		if got := shownString(t, strings.TrimSuffix(title, fmt.Sprintf(" (id %d)", steps[pick].Token.TokenID)),
			fmt.Sprintf("step %d: ", pick)); got != steps[pick].Token.TokenDisplay {
			t.Fatalf("title %q, want step %d's piece %q", title, pick, steps[pick].Token.TokenDisplay)
		}
		// Hovering a key names it: a step before by its piece, the prompt's
		// keys as the prompt.
		hover := func(layer, key int) string {
			var out string
			b.eval(t, fmt.Sprintf(`(() => {
				const c = document.querySelector('#attn-grid canvas[data-layer="%d"][data-head="0"]');
				const r = c.getBoundingClientRect(), z = +c.dataset.cell;
				c.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + 1 + %d * z + z / 2, clientY: r.top + 5}));
				return document.getElementById('attn-readout').textContent;
			})()`, layer, key), &out)
			return out
		}
		window := len(steps[pick].Trace.Attn[0])
		last := hover(1, window-1)
		prefix := fmt.Sprintf("layer 1 head 0 · key %d ", window-1)
		if i := strings.LastIndex(last, " · "); i < 0 || shownString(t, last[:i], prefix) != steps[pick-1].Token.TokenDisplay {
			t.Fatalf("hover over the newest key: %q, want step %d's piece %q", last, pick-1, steps[pick-1].Token.TokenDisplay)
		}
		if first := hover(1, 0); !strings.Contains(first, "key 0 (prompt) · ") {
			t.Fatalf("hover over the first key: %q, want the prompt", first)
		}
	})

	b.part(t, "ablation compares pieces", func(t *testing.T) {
		b.run(t, click("#tab-ablate"), click(`#head-grid button[data-key="0.0"]`), click(`#head-grid button[data-key="0.1"]`))
		b.run(t, click("#rerun"))
		b.waitFor(t, "the ablated reply", `document.getElementById('ablate-summary').textContent !== ''`)
		ablated, done := parseStream(t, rec.last(t, "/chat/stream").response)
		if !done {
			t.Fatal("the ablated stream did not finish")
		}
		var shown struct {
			A, B   []string
			Marked []bool
		}
		b.eval(t, `({A: [...document.querySelectorAll('#reply-a .tok')].map(b => b.textContent),
			B: [...document.querySelectorAll('#reply-b .tok')].map(b => b.textContent),
			Marked: [...document.querySelectorAll('#reply-b .tok')].map(b => b.classList.contains('changed'))})`, &shown)
		if len(shown.A) != len(steps) || len(shown.B) != len(ablated) {
			t.Fatalf("%d and %d boxes for %d and %d steps", len(shown.A), len(shown.B), len(steps), len(ablated))
		}
		changed := 0
		for i, st := range ablated {
			want := i >= len(steps) || steps[i].Token.TokenID != st.Token.TokenID
			if shown.B[i] != st.Token.TokenDisplay || shown.Marked[i] != want {
				t.Fatalf("ablated box %d: %q marked %v, the event's %q, changed %v", i, shown.B[i], shown.Marked[i], st.Token.TokenDisplay, want)
			}
			if want {
				changed++
			}
		}
		if changed == 0 {
			t.Fatal("switching off layer 0 changed no piece: the test proves nothing")
		}
		b.run(t, click("#clear-ablate"))
	})

	b.part(t, "the matrix of the conversation's pieces", func(t *testing.T) {
		b.run(t, click("#tab-matrix"), setField("#matrix-layer", "1"), setField("#matrix-head", "1"),
			setField("#matrix-zoom", "12"), click("#matrix-load"))
		b.waitFor(t, "the matrix", `document.getElementById('matrix').dataset.head === '1' && document.getElementById('matrix').width > 0`)
		ex := rec.last(t, "/inspect/attention")
		var asked struct{ Messages []engine.Message }
		var got struct {
			TokenIDs []int           `json:"token_ids"`
			Attn     [][][][]float64 `json:"attn"`
		}
		if err := json.Unmarshal(ex.request, &asked); err != nil || !slices.Equal(asked.Messages, []engine.Message{{Role: "user", Content: question}, {Role: "assistant", Content: reply}}) {
			t.Fatalf("the page asked for %s, want the conversation", ex.request)
		}
		if err := json.Unmarshal(ex.response, &got); err != nil || ex.status != http.StatusOK {
			t.Fatalf("/inspect/attention answered %d: %.200s", ex.status, ex.response)
		}
		want, err := model.FormatChat(asked.Messages)
		if err != nil || !slices.Equal(got.TokenIDs, int32sToInts(want)) {
			t.Fatalf("the window is %v, want the token-native transcript %v", got.TokenIDs, want)
		}
		var reds [][]int
		b.eval(t, fmt.Sprintf(canvasCellsJS, "#matrix", 0), &reds)
		wantHeat(t, "matrix", reds, got.Attn[0][1])
		// The labels' margin holds a piece, not only a byte's \xNN.
		var left int
		b.eval(t, `+document.getElementById('matrix').dataset.left`, &left)
		if left <= 36 {
			t.Fatalf("the labels have %d px for pieces such as %q", left, tok.Display(int(want[0])))
		}
	})

	b.part(t, "how the model reads the conversation and a text", func(t *testing.T) {
		type scored struct {
			TokenIDs      []int    `json:"token_ids"`
			TokensDisplay []string `json:"tokens_display"`
			Scores        []*struct {
				Logprob *float64 `json:"logprob"`
			} `json:"scores"`
			BitsPerByte float64 `json:"bits_per_byte"`
		}
		check := func(t *testing.T, wantIDs []int) {
			t.Helper()
			ex := rec.last(t, "/inspect/score")
			var got scored
			if err := json.Unmarshal(ex.response, &got); err != nil || ex.status != http.StatusOK {
				t.Fatalf("/inspect/score answered %d: %.200s", ex.status, ex.response)
			}
			if !slices.Equal(got.TokenIDs, wantIDs) {
				t.Fatalf("scored %v, want %v", got.TokenIDs, wantIDs)
			}
			var shown struct {
				Summary     string
				Texts, Bits []string
			}
			b.eval(t, `({Summary: document.getElementById('score-summary').textContent,
				Texts: [...document.querySelectorAll('#score-bytes span')].map(s => s.textContent),
				Bits: [...document.querySelectorAll('#score-bytes span')].map(s => s.dataset.bits || '')})`, &shown)
			wantSummary := fmt.Sprintf("%.3f bits per byte (mean log-probability ", got.BitsPerByte)
			if !strings.HasPrefix(shown.Summary, wantSummary) || !strings.Contains(shown.Summary, fmt.Sprintf(" over %d pieces)", len(wantIDs)-1)) {
				t.Fatalf("summary %q, the server said %v bits per byte over %d pieces", shown.Summary, got.BitsPerByte, len(wantIDs)-1)
			}
			if !slices.Equal(shown.Texts, got.TokensDisplay) {
				t.Fatalf("pieces shown %q, the server's %q", shown.Texts, got.TokensDisplay)
			}
			for i, sc := range got.Scores {
				want := ""
				if sc != nil {
					want = "Infinity"
					if sc.Logprob != nil {
						want = fmt.Sprintf("%.4f", -*sc.Logprob/math.Ln2)
					}
				}
				if shown.Bits[i] != want {
					t.Fatalf("piece %d: %q bits shown, want %q", i, shown.Bits[i], want)
				}
			}
		}
		b.run(t, click("#tab-score"),
			chromedp.Evaluate[chromedp.Void](`document.getElementById('score-summary').textContent = '', undefined`),
			click("#score-from-chat"))
		b.waitFor(t, "the conversation's scores", `document.getElementById('score-summary').textContent !== ''`)
		conv, err := model.FormatMessages([]engine.Message{{Role: "user", Content: question}, {Role: "assistant", Content: reply}})
		if err != nil {
			t.Fatal(err)
		}
		check(t, int32sToInts(conv))

		const text = "hello there, how are you"
		b.run(t, chromedp.Evaluate[chromedp.Void](`document.getElementById('score-summary').textContent = '', undefined`),
			setField("#score-text", text), click("#score-run"))
		b.waitFor(t, "the text's scores", `document.getElementById('score-summary').textContent !== ''`)
		check(t, tok.Encode(text))
	})

	b.part(t, "phone width, with a special piece's box", func(t *testing.T) {
		b.run(t, chromedp.EmulateViewport(390, 844))
		defer b.run(t, chromedp.EmulateViewport(1280, 800))
		b.open(t, ts.URL)
		send(t, 48)
		b.waitFor(t, "the reply", `!document.getElementById('send').disabled && document.querySelectorAll('.reply-text').length > 0`)
		var last string
		b.eval(t, `[...document.querySelectorAll('#transcript .reply .tok')].pop().textContent`, &last)
		if last != tok.Display(6) {
			t.Fatalf("the last box is %q, want the end-of-turn piece", last)
		}
		b.fitsWidth(t)
	})

	b.part(t, "a stopped reply is its pieces' text", func(t *testing.T) {
		b.open(t, pacedTS.URL)
		send(t, 48)
		b.waitFor(t, "a few paced pieces", `document.querySelectorAll('#transcript .tok').length >= 8`)
		b.run(t, click("#stop"))
		b.waitFor(t, "the stop", `!document.getElementById('send').disabled`)
		var stopped struct {
			Boxes []string
			Text  string
		}
		b.eval(t, `({Boxes: [...document.querySelectorAll('#transcript .tok')].map(b => b.textContent),
			Text: (document.querySelector('.reply-text') || {}).textContent || ''})`, &stopped)
		received, done := parseStream(t, pacedRec.last(t, "/chat/stream").response)
		// The server may write a step or two more before it sees the
		// connection closed; the page shows what it read.
		n := len(stopped.Boxes)
		if done || n < 8 || n > len(received) {
			t.Fatalf("after Stop: %d boxes for %d steps sent (done %v)", n, len(received), done)
		}
		var ids []int
		for i, st := range received[:n] {
			if stopped.Boxes[i] != st.Token.TokenDisplay {
				t.Fatalf("box %d shows %q, the event's token_display is %q", i, stopped.Boxes[i], st.Token.TokenDisplay)
			}
			if st.Token.TokenID != 6 { // end-of-turn is not text
				ids = append(ids, st.Token.TokenID)
			}
		}
		if want := strings.TrimSpace(tok.Decode(ids)); shownString(t, stopped.Text, "stopped: ") != want {
			t.Fatalf("the page says %q, want %q", stopped.Text, want)
		}
	})
}

// shownString reads a string the page wrote with JSON.stringify after
// prefix.
func shownString(t *testing.T, shown, prefix string) string {
	t.Helper()
	var s string
	if !strings.HasPrefix(shown, prefix) || json.Unmarshal([]byte(shown[len(prefix):]), &s) != nil {
		t.Fatalf("the page shows %q, want %q and a JSON string", shown, prefix)
	}
	return s
}
