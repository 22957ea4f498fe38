package server

// The lifecycle of a serving process: listen at once, obtain the model in
// the background (POSTs get 503 model_loading meanwhile), and on shutdown
// stop accepting, let in-flight requests finish within SHUTDOWN_TIMEOUT,
// then cut what remains and wait until no engine call is running before the
// model is closed.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"
)

// LoadFunc obtains the model. It runs while the server already answers; ctx
// ends when the server stops, so a download can give up. If the Engine it
// returns has a Close method, Run calls it once nothing uses the engine.
type LoadFunc func(ctx context.Context) (Engine, error)

type loadResult struct {
	engine  Engine
	err     error
	elapsed time.Duration
}

// Run serves on ln until ctx is done (SIGTERM, SIGINT) and then drains. It
// returns nil after a requested shutdown, and an error when the model could
// not be loaded or the listener failed. A Server runs at most once.
func (s *Server) Run(ctx context.Context, ln net.Listener, load LoadFunc) error {
	srv := &http.Server{
		Handler: s.Handler(),
		// No ReadTimeout or WriteTimeout: both would cut long streams.
		// Bodies get a deadline in readBody, writes one per write.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return s.baseCtx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	s.log.Info("listening", "addr", ln.Addr().String())

	sweepDone := make(chan struct{})
	stopSweep := make(chan struct{})
	go s.sweepRateBuckets(stopSweep, sweepDone)
	defer func() { close(stopSweep); <-sweepDone }()
	defer s.closeRateLimiter() // after the drain: no request needs it then

	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	loaded := make(chan loadResult, 1)
	go func() {
		start := time.Now()
		eng, err := callLoad(loadCtx, load)
		loaded <- loadResult{eng, err, time.Since(start)}
	}()

	var runErr error
	loading := loaded
wait:
	for {
		select {
		case err := <-serveErr:
			runErr = fmt.Errorf("serving HTTP: %w", err)
			break wait
		case r := <-loading:
			loading = nil
			if r.err != nil {
				runErr = fmt.Errorf("loading the model: %w", r.err)
				break wait
			}
			s.metrics.ModelLoaded(r.elapsed)
			s.SetEngine(r.engine)
			s.log.Info("model ready", "load_seconds", r.elapsed.Seconds())
		case <-ctx.Done():
			s.draining.Store(true)
			s.lameDuck(serveErr)
			s.log.Info("shutting down: draining in-flight requests", "timeout", s.cfg.ShutdownTimeout.String())
			break wait
		}
	}

	s.drain(srv)
	if loading != nil {
		// Still loading: give up on it, but close what it may yet return.
		cancelLoad()
		select {
		case r := <-loading:
			closeEngine(r.engine)
		case <-time.After(s.cfg.ShutdownTimeout):
			s.log.Warn("model still loading at shutdown; not waiting for it")
		}
	}
	closeEngine(s.currentEngine())
	return runErr
}

// lameDuck keeps serving for DRAIN_DELAY after the signal, with /readyz
// answering 503: a load balancer (or Kubernetes, whose endpoints lag the
// pod's deletion by a few seconds) still sends new connections for a
// while, and those should be served, not refused. The model may finish
// loading meanwhile; it is not put to use, and Run closes it.
func (s *Server) lameDuck(serveErr <-chan error) {
	if s.cfg.DrainDelay <= 0 {
		return
	}
	s.log.Info("shutting down: /readyz answers 503; still accepting until the drain delay ends", "drain_delay", s.cfg.DrainDelay.String())
	select {
	case <-time.After(s.cfg.DrainDelay):
	case err := <-serveErr: // the listener failed: nothing left to wait for
		s.log.Warn("serving HTTP ended during the drain delay", "error", err)
	}
}

// drain stops the listener and waits for in-flight requests; after
// SHUTDOWN_TIMEOUT it cancels every request's context, which stops each
// generation within one step and lets its stream end with an error event,
// waits for the slots to be given back, and only then closes what remains.
func (s *Server) drain(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		s.log.Warn("drain timed out; cutting the remaining requests", "error", err)
	}
	s.cancelBase()
	s.inflight.Wait() // bounded: one engine step plus one write deadline per stream
	// A handler gives its slot back just before net/http writes the end of
	// its response; give those last bytes one write deadline to leave.
	grace, cancelGrace := context.WithTimeout(context.Background(), s.cfg.WriteTimeout)
	defer cancelGrace()
	_ = srv.Shutdown(grace)
	_ = srv.Close()
}

// callLoad runs load, turning a panic into an error so a bad model file
// ends the process with a message rather than a stack trace.
func callLoad(ctx context.Context, load LoadFunc) (eng Engine, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic while loading: %v\n%s", p, debug.Stack())
		}
	}()
	eng, err = load(ctx)
	if err == nil && eng == nil {
		err = errors.New("the loader returned no model")
	}
	return eng, err
}

func closeEngine(e Engine) {
	if closer, ok := e.(interface{ Close() }); ok {
		closer.Close()
	}
}

// sweepRateBuckets frees this process's expired rate-limit buckets once a
// minute.
func (s *Server) sweepRateBuckets(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			s.local.sweep()
		case <-stop:
			return
		}
	}
}
