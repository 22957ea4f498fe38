//go:build linux

package reliability

// The main phase's load: the admission gate that keeps the driver within
// the server's free slots, the mix of request kinds a worker draws from
// (plain, cancelled and slow streams, full_attn, hostile bodies), the
// worker loop itself, and the tallies of how each request ended.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"nielsgpt/internal/harness"
)

// admission keeps the driver's demand within the server's free slots: a
// stream may start only while the slots in use (from /metrics) plus the
// requests sent but not yet answered stay under the cap. One waiter polls
// at a time, so two workers cannot both take the last slot.
type admission struct {
	url   string
	limit int

	gate    sync.Mutex // one admission decision at a time
	mu      sync.Mutex
	pending int

	// How long requests waited to be admitted: a driver that cannot keep
	// the slots busy would measure its own bottleneck, not the server's.
	admitted int
	waited   time.Duration
	maxWait  time.Duration
}

func (a *admission) enter(ctx context.Context) error {
	start := time.Now()
	a.gate.Lock()
	defer a.gate.Unlock()
	for {
		m, err := Scrape(a.url)
		if err != nil {
			return err
		}
		a.mu.Lock()
		free := int(m.Get("nielsgpt_active_generations"))+a.pending < a.limit
		if free {
			a.pending++
			wait := time.Since(start)
			a.admitted++
			a.waited += wait
			a.maxWait = max(a.maxWait, wait)
		}
		a.mu.Unlock()
		if free {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// answered is called once the server has answered (it has taken its slot
// and the gauge shows it, or it refused).
func (a *admission) answered() {
	a.mu.Lock()
	a.pending--
	a.mu.Unlock()
}

// soakKinds are the request kinds a worker chooses from, with weights.
var soakKinds = []struct {
	name   string
	weight int
}{
	{"stream", 40}, // read to the end
	{"cancel", 20}, // hang up after a few tokens
	{"slow", 15},   // read slowly, to the end
	{"full_attn", 10},
	{"bad", 15}, // malformed or out-of-range
}

// badRequest is a hostile body and the refusal it must get.
type badRequest struct {
	name, path, body, contentType string
	status                        int
	code                          string
}

func soakBadRequests() []badRequest {
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	huge := ChatBody(strings.Repeat("x", 16<<10), 4, 0, 1) // formatted > MAX_PROMPT_BYTES
	return []badRequest{
		{"truncated json", "/chat/stream", `{"messages":`, "", 422, "invalid"},
		{"unknown role", "/chat/stream", `{"messages":[{"role":"root","content":"hi"}],"trace_layer":0}`, "", 422, "invalid"},
		{"huge max_new_tokens", "/chat/stream", `{` + msgs + `,"trace_layer":0,"max_new_tokens":1000000000000}`, "", 422, "invalid"},
		{"top_k 0", "/chat/stream", `{` + msgs + `,"trace_layer":0,"top_k":0}`, "", 422, "invalid"},
		{"layer out of range", "/chat/stream", `{` + msgs + `,"trace_layer":99}`, "", 422, "invalid"},
		{"NaN", "/chat/stream", `{` + msgs + `,"trace_layer":0,"temperature":NaN}`, "", 422, "invalid"},
		{"invalid UTF-8", "/chat/stream", "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}],\"trace_layer\":0}", "", 422, "invalid"},
		{"empty messages", "/inspect/full_attn", `{"messages":[],"trace_layer":0,"head":0}`, "", 422, "invalid"},
		{"head out of range", "/inspect/full_attn", `{` + msgs + `,"trace_layer":0,"head":-1}`, "", 422, "invalid"},
		{"deep nesting", "/chat/stream", `{"messages":` + strings.Repeat("[", 3000) + strings.Repeat("]", 3000) + `}`, "", 422, "invalid"},
		{"text/plain", "/chat/stream", `{` + msgs + `,"trace_layer":0}`, "text/plain", 422, "invalid"},
		{"prompt too large", "/chat/stream", huge, "", 413, "prompt_too_large"},
	}
}

func fullAttnBody(content string, layer, head, maxNew int) string {
	return fmt.Sprintf(`{"messages":[{"role":"user","content":%q}],"trace_layer":%d,"head":%d,"max_new_tokens":%d}`, content, layer, head, maxNew)
}

// soakWorker is one client of the main phase: its own address, its own
// random choices.
type soakWorker struct {
	run    *soakRun
	server *harness.Server
	adm    *admission
	client *http.Client
	rng    *rand.Rand
	bad    []badRequest
}

// worker runs one client until stopAt or until the phase is cut.
func (r *soakRun) worker(ctx context.Context, s *harness.Server, adm *admission, w int, stopAt time.Time) {
	rng := rand.New(rand.NewPCG(r.o.Seed, uint64(w)))
	wk := &soakWorker{run: r, server: s, adm: adm, client: ClientFrom(LoopbackIP(w)), rng: rng, bad: soakBadRequests()}
	totalWeight := 0
	for _, k := range soakKinds {
		totalWeight += k.weight
	}
	for n := 0; time.Now().Before(stopAt) && ctx.Err() == nil; n++ {
		kind := pickKind(rng.IntN(totalWeight))
		content := fmt.Sprintf("worker %d request %d: what are you working on?", w, n)
		long := rng.IntN(10) == 0
		if long {
			// A long transcript: prefill in chunks and a window re-cut
			// every token once past T.
			content += strings.Repeat(" tell me more about attention.", 60+rng.IntN(400))
		}
		seed := rng.Int64()
		var more bool
		switch kind {
		case "bad":
			more = wk.sendBad(ctx)
		case "full_attn":
			more = wk.sendFullAttn(ctx, content)
		default:
			more = wk.sendStream(ctx, kind, content, long, seed)
		}
		if !more {
			return
		}
	}
}

// pickKind maps a draw in [0, total weight) to the kind whose share of the
// weights it falls in.
func pickKind(pick int) string {
	for _, k := range soakKinds {
		if pick < k.weight {
			return k.name
		}
		pick -= k.weight
	}
	return ""
}

// sendBad sends one hostile body and checks its refusal. Each send* reports
// false when the main phase ended under it, so the worker stops.
func (wk *soakWorker) sendBad(ctx context.Context) bool {
	b := wk.bad[wk.rng.IntN(len(wk.bad))]
	hdr := http.Header{}
	if b.contentType != "" {
		hdr.Set("Content-Type", b.contentType)
	}
	status, code, _, err := Post(ctx, wk.client, wk.server.URL+b.path, b.body, hdr)
	if endOfPhase(ctx, err) {
		wk.run.recordCut("bad")
		return false
	}
	wk.run.record("bad", status, code, err, status == b.status && code == b.code, "bad request "+b.name)
	return true
}

// sendFullAttn asks for one full attention map, at a random layer and head
// of the served model.
func (wk *soakWorker) sendFullAttn(ctx context.Context, content string) bool {
	r, rng := wk.run, wk.rng
	if wk.adm.enter(ctx) != nil {
		return false
	}
	status, code, _, err := Post(ctx, wk.client, wk.server.URL+"/inspect/full_attn", fullAttnBody(content, rng.IntN(r.layers), rng.IntN(r.heads), rng.IntN(9)), nil)
	wk.adm.answered()
	if endOfPhase(ctx, err) {
		r.recordCut("full_attn")
		return false
	}
	r.record("full_attn", status, code, err, status == http.StatusOK, "full_attn")
	return true
}

// sendStream runs one chat stream of the given kind: read to the end,
// hung up on after a few tokens ("cancel"), or read slowly ("slow").
func (wk *soakWorker) sendStream(ctx context.Context, kind, content string, long bool, seed int64) bool {
	r, rng := wk.run, wk.rng
	opts := StreamOptions{}
	maxNew := 16 + rng.IntN(81)
	switch kind {
	case "cancel":
		opts.CancelAfter = 1 + rng.IntN(30)
		maxNew = 256
	case "slow":
		opts.EventDelay = time.Duration(20+rng.IntN(41)) * time.Millisecond
		maxNew = 8 + rng.IntN(17)
	}
	if long {
		// Past T every token re-reads the whole window, so such a
		// stream costs T times as much per token. Left long, they
		// would pile up among the live streams over minutes and the
		// load (and with it the KV-cache memory in use) would keep
		// shifting; kept short, the mix is steady after the warm-up
		// and the RSS trend means something.
		maxNew = min(maxNew, 24)
		opts.CancelAfter = min(opts.CancelAfter, 12)
	}
	if wk.adm.enter(ctx) != nil {
		return false
	}
	opts.OnResponse = sync.OnceFunc(wk.adm.answered)
	e := PostStream(ctx, wk.client, wk.server.URL+"/chat/stream", ChatBody(content, maxNew, rng.IntN(r.layers), seed), opts)
	opts.OnResponse() // in case the request failed before any answer
	r.tokens.Add(int64(e.Tokens))
	if endOfPhase(ctx, e.Err) {
		r.recordCut(kind)
		return false
	}
	r.recordStream(kind, e, opts.CancelAfter)
	return true
}

// endOfPhase tells a request the driver cut at the end of the main phase
// from one that failed on its own.
func endOfPhase(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() != nil
}

// recordCut counts a request still running when the phase ended.
func (r *soakRun) recordCut(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[kind]++
	r.outcomes[kind+" cut at the end of the phase"]++
}

// record counts one non-stream answer.
func (r *soakRun) record(kind string, status int, code string, err error, ok bool, what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[kind]++
	key := fmt.Sprintf("%s %d", kind, status)
	if code != "" {
		key += " " + code
	}
	if err != nil {
		key = kind + " transport error"
	}
	r.outcomes[key]++
	r.classify(status, code)
	if err != nil || !ok {
		r.surprise(fmt.Sprintf("%s: status %d code %q err %v", what, status, code, err))
	}
}

// recordStream counts one stream by how it ended.
func (r *soakRun) recordStream(kind string, e StreamEnd, cancelAfter int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[kind]++
	final := e.Final
	if final == "" {
		final = "no final event"
	}
	key := fmt.Sprintf("%s %d %s", kind, e.Status, final)
	if e.Status != http.StatusOK {
		key = fmt.Sprintf("%s %d %s", kind, e.Status, e.Code)
	}
	r.outcomes[key]++
	r.classify(e.Status, e.Code)
	if strings.HasPrefix(e.Final, "error:") {
		r.fivexx.Add(1) // an error event is a 5xx that came too late for the status line
	}
	ok := e.Status == http.StatusOK && e.Err == nil
	switch {
	case !ok:
	case kind == "cancel":
		// Hung up as planned, or the stream was shorter than the patience.
		ok = (e.Final == "" && e.Tokens == cancelAfter) || (e.Final == "done" && e.Clean)
	default:
		ok = e.Final == "done" && e.Clean
	}
	if !ok {
		r.surprise(fmt.Sprintf("%s stream: status %d code %q final %q after %d tokens, clean %v, err %v", kind, e.Status, e.Code, e.Final, e.Tokens, e.Clean, e.Err))
	}
}

// classify counts the statuses the checks are about. Called with r.mu held.
func (r *soakRun) classify(status int, code string) {
	switch {
	case status == http.StatusServiceUnavailable && code == "busy":
		r.busy.Add(1)
	case status >= 500:
		r.fivexx.Add(1)
	case status == http.StatusTooManyRequests:
		r.limited.Add(1)
	}
}

// surprise keeps the first few distinct unexpected outcomes. r.mu held.
func (r *soakRun) surprise(s string) {
	if len(r.unexpected) < 20 && !slices.Contains(r.unexpected, s) {
		r.unexpected = append(r.unexpected, s)
	}
}
