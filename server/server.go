// Package server is niels-gpt's HTTP API (docs/API.md): Gin routes, SSE framing,
// the limits a public endpoint needs (body size, rate, concurrency, CORS),
// request logs and Prometheus metrics, and the lifecycle of `nielsgpt serve`
// (listening at once, loading the model in the background, draining on
// SIGTERM). Handlers talk to the model through the small Engine interface so
// the HTTP layer can be tested against a fake one.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"nielsgpt/engine"
	"nielsgpt/gguf"
	"nielsgpt/metrics"
	"nielsgpt/tokenizer"
)

// Engine is what the handlers need from a loaded model; *engine.Model
// implements it. Generate and FullAttention must stop within one step once
// ctx is done, and Generate also when onStep returns an error.
type Engine interface {
	Config() gguf.ModelConfig
	Generate(ctx context.Context, req engine.GenerateRequest, onStep func(*engine.Step) error) (*engine.Result, error)
	FullAttention(ctx context.Context, req engine.FullAttnRequest) (*engine.FullAttn, error)
	// Score reads a text in one pass and says how likely each token was.
	Score(ctx context.Context, req engine.ScoreRequest) (*engine.Scores, error)
	// Tokenizer is the model's vocabulary, which token ids in responses are
	// shown with.
	Tokenizer() tokenizer.Tokenizer
}

// Server holds the routes, the limits and the (eventually) loaded engine.
type Server struct {
	cfg     Config
	metrics *metrics.Metrics
	log     *slog.Logger

	engine   atomic.Pointer[engineBox] // nil until the model is loaded
	draining atomic.Bool               // shutdown has begun: /readyz answers 503

	trust    proxyTrust
	limiter  rateLimiter      // the buckets requests draw on
	local    *localBuckets    // this process's own buckets (the fallback when shared)
	failover *failoverBuckets // nil without REDIS_URL
	slots    chan struct{}    // one token per generation allowed at once
	keys     keyDigests       // API_KEYS; empty when keys are off

	// inflight counts handlers that hold a generation slot. After a drain
	// times out, Run cancels baseCtx and waits on it, so no engine call is
	// still running when the model is closed.
	inflight   sync.WaitGroup
	baseCtx    context.Context
	cancelBase context.CancelFunc

	router  *gin.Engine
	started time.Time // for /v1/models' created
}

// engineBox lets an interface value live in an atomic.Pointer, with the
// table its token ids are shown with.
type engineBox struct {
	Engine
	tokens *tokenTable
}

// New builds a server from a validated Config. m and log may be nil (fresh
// metrics, and a logger that discards).
func New(cfg Config, m *metrics.Metrics, log *slog.Logger) (*Server, error) {
	if cfg.MaxConcurrent < 1 || cfg.RateLimitBurst < 1 || cfg.RateLimitPerMin <= 0 ||
		cfg.MaxBodyBytes < 1 || cfg.MaxPromptBytes < 1 || cfg.WriteTimeout <= 0 ||
		cfg.ReadTimeout <= 0 || cfg.ShutdownTimeout <= 0 {
		return nil, errors.New("server: configuration has unset limits; start from DefaultConfig or parse Settings")
	}
	if m == nil {
		m = metrics.New()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:     cfg,
		metrics: m,
		log:     log,
		trust:   proxyTrust{prefixes: cfg.TrustedProxies},
		local:   newLocalBuckets(cfg.RateLimitPerMin, cfg.RateLimitBurst),
		slots:   make(chan struct{}, cfg.MaxConcurrent),
		keys:    newKeyDigests(cfg.APIKeys),
	}
	s.limiter = s.local
	if cfg.RedisURL != "" {
		opts, err := redisOptions(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("server: REDIS_URL: %w", err)
		}
		shared := newRedisBuckets(opts, cfg.RateLimitPerMin, cfg.RateLimitBurst)
		s.failover = newFailoverBuckets(shared, s.local, where(opts), log, m)
		s.limiter = s.failover
	}
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.started = time.Now()
	s.router = s.routes()
	return s, nil
}

// closeRateLimiter stops what the shared buckets run in the background.
// Run calls it once every request has finished; tests that never Run a
// Server with REDIS_URL call it themselves.
func (s *Server) closeRateLimiter() {
	if s.failover != nil {
		s.failover.close()
	}
}

// SetEngine makes the model available: from here on POSTs are served and
// /health reports model_ready true.
func (s *Server) SetEngine(e Engine) {
	tokens := byteTokens
	if e.Config().Generation() != 1 {
		tokens = newTokenTable(e.Tokenizer())
	}
	s.engine.Store(&engineBox{Engine: e, tokens: tokens})
}

// currentTokens is the loaded model's token table (the byte table before
// a model is loaded).
func (s *Server) currentTokens() *tokenTable {
	if box := s.engine.Load(); box != nil {
		return box.tokens
	}
	return byteTokens
}

func (s *Server) currentEngine() Engine {
	if box := s.engine.Load(); box != nil {
		return box.Engine
	}
	return nil
}

// Handler is the whole HTTP API, for http.Server or httptest.
func (s *Server) Handler() http.Handler { return s.router }

// Metrics is the collector set this server updates.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

func (s *Server) routes() *gin.Engine {
	r := gin.New()
	// Routing must not second-guess our own client-IP logic or paths.
	r.ForwardedByClientIP = false
	_ = r.SetTrustedProxies(nil)
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true

	r.Use(s.recoverPanics, s.accessLog, s.cors())
	r.NoRoute(func(c *gin.Context) { writeError(c, s, http.StatusNotFound, "not_found", "Not found") })
	r.NoMethod(func(c *gin.Context) {
		writeError(c, s, http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed")
	})

	r.GET("/health", s.health)
	r.HEAD("/health", s.health) // uptime probes like HEAD; gin does not derive it from GET
	for _, register := range []func(string, ...gin.HandlerFunc) gin.IRoutes{r.GET, r.HEAD} {
		register("/livez", s.livez)
		register("/readyz", s.readyz)
	}
	r.GET("/metrics", gin.WrapH(s.metrics.Handler()))
	generation := r.Group("", s.requireAPIKey, s.requireModel, s.rateLimit)
	generation.POST("/chat/stream", s.chatStream)
	generation.POST("/inspect/full_attn", s.fullAttn)
	generation.POST("/inspect/attention", s.attention)
	generation.POST("/inspect/score", s.score)
	s.openAIRoutes(r)
	RegisterDocs(r)
	s.registerPage(r)
	return r
}

// acquireSlot takes a generation slot without waiting: a full server answers
// 503 busy at once rather than queueing requests it may never reach.
func (s *Server) acquireSlot() (release func(), ok bool) {
	select {
	case s.slots <- struct{}{}:
	default:
		return nil, false
	}
	s.inflight.Add(1)
	s.metrics.GenerationStarted()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.metrics.GenerationEnded()
			<-s.slots
			s.inflight.Done()
		})
	}, true
}

// writeDeadline is when the next write to a client must have finished.
func (s *Server) writeDeadline() time.Time { return time.Now().Add(s.cfg.WriteTimeout) }

// Gin's debug mode prints every route to stdout; the access log is ours.
func init() { gin.SetMode(gin.ReleaseMode) }
