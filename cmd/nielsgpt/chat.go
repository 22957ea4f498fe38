package main

// nielsgpt chat: talk to the model in a terminal, on the same engine the
// server uses. Replies stream as the tokens come; with --trace every token
// also shows the entropy it was drawn with and the earlier tokens the traced
// layer looked at most. Piped stdin works too (one user turn per line), which
// is what the tests drive.
//
// This file holds the command (flags, opening the model) and the
// conversation loop; chat_reply.go generates and streams one reply,
// chat_trace.go prints --trace, and chat_sanitize.go makes text safe for a
// terminal.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"nielsgpt/engine"
	"nielsgpt/gguf"
	"nielsgpt/modelsource"
)

// demoSystemLine is the system line the demo model was trained with; other
// niels-gpt checkpoints were trained on the same primer, so it is the default
// for every model.
const demoSystemLine = "surly chatbot for niels' site. third-person. terse. rude but not offensive. " +
	"grudging, laconic, brooding. answers like it resents being asked. doesn't guess. " +
	"says 'i don't know' for unknowns. refuses private info with 'no'."

// Bounds on flags that would otherwise only fail deep inside the engine, or
// never (a reply of a billion tokens).
const (
	maxChatNewTokens = 1 << 16
	maxInputLine     = 1 << 20
)

// chatModel is what the chat needs from a model: *engine.Model in the binary,
// a scripted fake in the tests that need exact byte streams.
type chatModel interface {
	Config() gguf.ModelConfig
	Generate(ctx context.Context, req engine.GenerateRequest, onStep func(*engine.Step) error) (*engine.Result, error)
	// FormatChat is the model's transcript of messages as token ids, the
	// generation prompt included (engine.Model.FormatChat).
	FormatChat(messages []engine.Message) ([]int32, error)
	// TokenDisplay shows a token as the API's token_display does.
	TokenDisplay(id int) string
}

// chatOptions are the settings of one chat session.
type chatOptions struct {
	System       string // "" for no system message
	Sampling     engine.Sampling
	MaxNewTokens int
	Trace        bool
	TraceLayer   int // used when Trace is set; must be a valid layer
	// Interactive means a person is typing: show a prompt, and treat an
	// interrupt at the prompt as "leave". Piped input is echoed instead, so
	// the output reads as a transcript.
	Interactive bool
	// Interrupts delivers Ctrl-C. During a reply it cancels that reply
	// (interactive) or the whole chat (piped); while waiting for input it
	// ends the chat. Nil means no interrupts.
	Interrupts <-chan os.Signal
}

// errInterrupted ends a piped chat that was interrupted mid-reply.
var errInterrupted = errors.New("interrupted")

func runChat(args []string) error {
	flags, err := parseChatFlags(args)
	if err != nil {
		return err
	}
	modelCfg, err := flags.modelConfig()
	if err != nil {
		return err
	}
	model, source, err := openChatModel(modelCfg)
	if err != nil {
		return err
	}
	defer model.Close()

	cfg := model.Config()
	opts, err := flags.options(cfg)
	if err != nil {
		return err
	}

	// Ctrl-C must not kill the process mid-reply: the chat decides what it means.
	interrupts := make(chan os.Signal, 1)
	signal.Notify(interrupts, os.Interrupt)
	defer signal.Stop(interrupts)
	opts.Interrupts = interrupts

	if opts.Interactive {
		fmt.Fprintf(os.Stdout, "nielsgpt chat: %s (T=%d, C=%d, L=%d, H=%d) on %s\n"+
			"/reset forgets the conversation, /quit or Ctrl-D leaves, Ctrl-C stops a reply.\n",
			source, cfg.Context, cfg.Embd, cfg.Layers, cfg.Heads, model.Backend())
	}
	return chatLoop(context.Background(), os.Stdin, os.Stdout, model, opts)
}

// chatFlags are chat's command-line settings, checked as far as they can be
// before a model is loaded.
type chatFlags struct {
	model       string
	tokenizer   string
	system      string
	temperature float64
	topK        int
	seed        int64
	maxNew      int
	threads     int
	device      string
	trace       bool
	traceLayer  layerFlag
	given       map[string]bool // the flags set on the command line
}

func parseChatFlags(args []string) (*chatFlags, error) {
	f := &chatFlags{given: map[string]bool{}}
	fs := newFlagSet("chat", os.Stderr, "usage: nielsgpt chat [flags]\n\n"+
		"Chat with niels-gpt in the terminal. Type a message and press Enter;\n"+
		"/reset forgets the conversation, /quit or Ctrl-D leaves, Ctrl-C stops a reply.\n"+
		"With stdin piped, every line is one user turn.\n\nflags:\n")
	fs.StringVar(&f.model, "model", "demo", `model to chat with, as for serve: "demo" (embedded), PATH.gguf, PATH.pt (converted once, cached beside it), or "" for CKPT_DIR/CKPT_FILENAME, else the Hub; $MODEL sets the default`)
	fs.StringVar(&f.tokenizer, "tokenizer", "", "spm.model of a generation-2 PATH.pt, as for serve (default $TOKENIZER, else spm.model beside it)")
	fs.StringVar(&f.system, "system", demoSystemLine, `system message opening every transcript ("" for none)`)
	fs.Float64Var(&f.temperature, "temperature", 0.9, "sampling temperature; 0 is greedy")
	fs.IntVar(&f.topK, "top-k", 50, "sample from the k most likely bytes; 0 means all")
	fs.Int64Var(&f.seed, "seed", 42, "sampling seed (every reply starts from it, as an API request does)")
	fs.IntVar(&f.maxNew, "max-new-tokens", 256, "longest reply, in tokens (bytes)")
	fs.IntVar(&f.threads, "threads", 0, "CPU threads for the engine; 0 means one per core (default $THREADS or 0)")
	fs.StringVar(&f.device, "device", "", `compute device: cpu, or metal/mps/gpu where built (default $DEVICE, else as serve picks)`)
	fs.BoolVar(&f.trace, "trace", false, "show each token's entropy and most-attended earlier tokens")
	fs.Var(&f.traceLayer, "trace-layer", "`layer` whose attention --trace shows, 0-based; default the last (implies --trace)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags go before nothing else; see -h)", fs.Arg(0))
	}
	switch {
	case !(f.temperature >= 0) || math.IsInf(f.temperature, 1):
		return nil, fmt.Errorf("--temperature must be a finite number >= 0, got %v", f.temperature)
	case f.topK < 0:
		return nil, fmt.Errorf("--top-k must be >= 0, got %d", f.topK)
	case f.maxNew < 1 || f.maxNew > maxChatNewTokens:
		return nil, fmt.Errorf("--max-new-tokens must be in [1, %d], got %d", maxChatNewTokens, f.maxNew)
	case f.threads < 0:
		return nil, fmt.Errorf("--threads must be >= 0, got %d", f.threads)
	case strings.ContainsAny(f.system, "\r\n"):
		// A newline would let the system text forge turns in the transcript.
		return nil, errors.New("--system must be a single line")
	}
	fs.Visit(func(fl *flag.Flag) { f.given[fl.Name] = true })
	return f, nil
}

// modelConfig is the model to open: the environment's model settings, with
// the flags given on the command line over them.
func (f *chatFlags) modelConfig() (modelsource.Config, error) {
	// Only the model settings are read, so a bad server-only variable (a
	// port, a rate limit) cannot stop a chat.
	modelCfg, err := modelsource.FromEnv(os.LookupEnv)
	if err != nil {
		return modelsource.Config{}, err
	}
	if _, ok := os.LookupEnv("MODEL"); !ok || f.given["model"] {
		modelCfg.Model = f.model
	}
	if f.given["device"] {
		modelCfg.Device = f.device
	}
	if f.given["tokenizer"] {
		modelCfg.Tokenizer = f.tokenizer
	}
	if f.given["threads"] {
		modelCfg.Threads = f.threads
	}
	// BASELINE is serve's benchmark switch (one request at a time, no KV
	// cache); a chat has nothing to compare and keeps the fast path.
	modelCfg.Baseline = false
	return modelCfg, nil
}

// options are the session's settings for a model of configuration cfg (the
// trace layer can only be checked, and defaulted, once the model is loaded).
func (f *chatFlags) options(cfg gguf.ModelConfig) (chatOptions, error) {
	opts := chatOptions{
		System:       f.system,
		Sampling:     engine.Sampling{Temperature: f.temperature, TopK: f.topK, Seed: f.seed},
		MaxNewTokens: f.maxNew,
		Trace:        f.trace || f.traceLayer.set,
		TraceLayer:   cfg.Layers - 1,
		Interactive:  isTerminal(os.Stdin),
	}
	if f.traceLayer.set {
		if f.traceLayer.layer >= cfg.Layers {
			return chatOptions{}, fmt.Errorf("--trace-layer %d out of range: the model has %d layers (0..%d)", f.traceLayer.layer, cfg.Layers, cfg.Layers-1)
		}
		opts.TraceLayer = f.traceLayer.layer
	}
	return opts, nil
}

// layerFlag is --trace-layer: unset means "the last layer", which is only
// known once the model is loaded.
type layerFlag struct {
	layer int
	set   bool
}

func (f *layerFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.Itoa(f.layer)
}

func (f *layerFlag) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("want a layer number >= 0, got %q", v)
	}
	f.layer, f.set = n, true
	return nil
}

// openChatModel opens the model exactly as serve does (modelsource.Load),
// and says where it came from, for the banner.
func openChatModel(cfg modelsource.Config) (*engine.Model, string, error) {
	// Ctrl-C during a download or conversion stops it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var progress io.Writer
	if isTerminal(os.Stderr) {
		progress = os.Stderr
	}
	return modelsource.Load(ctx, cfg, modelsource.Options{Demo: func() []byte { return demoGGUF }, Progress: progress})
}

// isTerminal reports whether f is a character device, which for stdin means a
// person at a terminal. The standard library's answer is enough here and
// keeps a dependency out.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// chatLoop runs the conversation: each line read from in is a user turn (or
// a /command), and each reply is written to out as it is generated.
func chatLoop(ctx context.Context, in io.Reader, out io.Writer, model chatModel, opts chatOptions) error {
	cfg := model.Config()
	if opts.Trace && (opts.TraceLayer < 0 || opts.TraceLayer >= cfg.Layers) {
		return fmt.Errorf("trace layer %d out of range: the model has %d layers", opts.TraceLayer, cfg.Layers)
	}
	if opts.MaxNewTokens < 1 {
		return fmt.Errorf("max new tokens must be >= 1, got %d", opts.MaxNewTokens)
	}

	done := make(chan struct{})
	defer close(done)
	lines := readLines(in, done)

	var history []engine.Message
	reset := func() {
		history = history[:0]
		if opts.System != "" {
			history = append(history, engine.Message{Role: "system", Content: opts.System})
		}
	}
	reset()

	for {
		if opts.Interactive {
			fmt.Fprint(out, "you> ")
		}
		var line inputLine
		var ok bool
		select {
		case line, ok = <-lines:
		case <-opts.Interrupts:
			fmt.Fprintln(out)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			if opts.Interactive {
				fmt.Fprintln(out) // leave the shell prompt on a line of its own
			}
			return nil
		}
		if line.err != nil {
			return line.err
		}
		text := strings.TrimSpace(line.text)
		if !opts.Interactive {
			fmt.Fprintf(out, "you> %s\n", sanitize(text))
		}
		switch {
		case text == "":
			continue
		case text == "/quit" || text == "/exit":
			return nil
		case text == "/reset":
			reset()
			fmt.Fprintln(out, "(conversation forgotten)")
			continue
		case text == "/help":
			fmt.Fprintln(out, "/reset forgets the conversation, /quit or Ctrl-D leaves, Ctrl-C stops a reply.")
			continue
		case strings.HasPrefix(text, "/") && !strings.Contains(text, " "):
			fmt.Fprintf(out, "unknown command %s (try /help)\n", sanitize(text))
			continue
		}

		history = fitHistory(append(history, engine.Message{Role: "user", Content: text}), cfg.Context, transcriptLength(model))
		reply, cancelled, err := chatReply(ctx, out, model, opts, history)
		switch {
		case err != nil:
			return err
		case cancelled && !opts.Interactive:
			return errInterrupted
		case cancelled:
			// The reply was not finished: forget the turn rather than keep a
			// half answer the model would then read as its own.
			history = history[:len(history)-1]
		default:
			history = append(history, engine.Message{Role: "assistant", Content: reply})
		}
	}
}

// fitHistory keeps the system message and as many of the most recent turns as
// fit in the model's window of T tokens (the newest user turn always stays);
// length is how many tokens a conversation's transcript has. The engine
// would only look at the last T tokens anyway; dropping whole old turns
// instead of letting the window cut through them keeps the system line in
// view, which is how the demo model saw every dialogue in training.
func fitHistory(history []engine.Message, T int, length func([]engine.Message) int) []engine.Message {
	var system []engine.Message
	turns := history
	if len(turns) > 0 && turns[0].Role == "system" {
		system, turns = turns[:1], turns[1:]
	}
	size := func(ts []engine.Message) int {
		return length(append(append([]engine.Message{}, system...), ts...))
	}
	for len(turns) > 1 && size(turns) > T {
		turns = turns[1:]
		// A reply without its question would read as a dialogue that
		// starts mid-way; drop it together with the question.
		for len(turns) > 1 && turns[0].Role != "user" {
			turns = turns[1:]
		}
	}
	kept := make([]engine.Message, 0, len(system)+len(turns))
	return append(append(kept, system...), turns...)
}

// transcriptLength counts a conversation's tokens as the model writes it.
func transcriptLength(model chatModel) func([]engine.Message) int {
	return func(messages []engine.Message) int {
		ids, err := model.FormatChat(messages)
		if err != nil {
			return math.MaxInt // a role the model has no piece for: never fits
		}
		return len(ids)
	}
}

// inputLine is one line of input, or the error that ended reading.
type inputLine struct {
	text string
	err  error
}

// readLines reads in on its own goroutine so that waiting for a line can be
// interrupted. The channel closes at end of input.
func readLines(in io.Reader, done <-chan struct{}) <-chan inputLine {
	lines := make(chan inputLine)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 0, 64<<10), maxInputLine)
		for sc.Scan() {
			select {
			case lines <- inputLine{text: sc.Text()}:
			case <-done:
				return
			}
		}
		err := sc.Err()
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("input line longer than %d bytes", maxInputLine)
		}
		if err != nil {
			select {
			case lines <- inputLine{err: fmt.Errorf("reading input: %w", err)}:
			case <-done:
			}
		}
	}()
	return lines
}
