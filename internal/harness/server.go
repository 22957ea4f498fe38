package harness

// The real `nielsgpt serve` as a subprocess, for everything that checks the
// process users run rather than a function call: `nielsgpt bench`, the soak
// and the reliability tests. The server picks its own port (--port 0) and
// the harness reads it back from its "listening" log line, so no other
// process can take the port between choosing and binding it. The harness
// keeps what the callers need to judge the process: its output, its exit
// code, its CPU time, and signals of their choosing.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"time"
)

// Spec says how to start `nielsgpt serve`.
type Spec struct {
	Exe   string   // the nielsgpt binary
	Model string   // --model; "" leaves the choice to the server (CKPT_DIR and the Hub)
	Args  []string // more serve flags, e.g. --baseline
	// Env is KEY=VALUE on top of the base environment; later entries win.
	// The base sets THREADS=1, which leaves a core to the client side; Env
	// may override it.
	Env []string
	// InheritEnv starts from this process's whole environment, as the bench
	// does so that the user's settings apply. Otherwise the base is PATH,
	// HOME and TMPDIR only, so that a developer's own HF_TOKEN, MODEL or
	// limits cannot leak into a test.
	InheritEnv bool
}

// command builds the serve command line and environment.
func (spec Spec) command() *exec.Cmd {
	args := []string{"serve", "--host", "127.0.0.1", "--port", "0"}
	if spec.Model != "" {
		args = append(args, "--model", spec.Model)
	}
	cmd := exec.Command(spec.Exe, append(args, spec.Args...)...)
	var env []string
	if spec.InheritEnv {
		env = os.Environ()
	} else {
		for _, key := range []string{"PATH", "HOME", "TMPDIR"} {
			if v, ok := os.LookupEnv(key); ok {
				env = append(env, key+"="+v)
			}
		}
	}
	env = append(env, "THREADS=1")
	env = append(env, spec.Env...)
	// JSON logs, whatever else says otherwise: the "listening" line is
	// parsed, and tests grep the rest.
	cmd.Env = append(env, "LOG_FORMAT=json")
	setChildAttrs(cmd)
	return cmd
}

// Server is a running (or finished) `nielsgpt serve`.
type Server struct {
	URL  string // http://127.0.0.1:PORT
	Addr string // 127.0.0.1:PORT

	cmd      *exec.Cmd
	out      *outputLog
	exited   chan struct{}
	exitCode int // valid once exited is closed; -1 when a signal ended it
}

func launch(spec Spec) (*Server, error) {
	cmd := spec.command()
	s := &Server{cmd: cmd, out: newOutputLog(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.Exe, err)
	}
	go func() {
		err := cmd.Wait()
		s.exitCode = cmd.ProcessState.ExitCode()
		if err != nil && s.exitCode == 0 {
			s.exitCode = -1
		}
		close(s.exited)
	}()
	return s, nil
}

// outputShown is how much of the server's output an error message quotes:
// enough for a start-up failure or the last requests before a crash.
const outputShown = 16 << 10

// Start starts the server and returns once it listens, which is before the
// model is loaded (see WaitReady and StartReady).
func Start(ctx context.Context, spec Spec, timeout time.Duration) (*Server, error) {
	s, err := launch(spec)
	if err != nil {
		return nil, err
	}
	deadline := time.After(timeout)
	for {
		if addr := s.out.listeningAddr(); addr != "" {
			s.Addr, s.URL = addr, "http://"+addr
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("the server exited (code %d) before listening:\n%s", s.exitCode, s.OutputTail(outputShown))
		case <-deadline:
			s.Kill()
			return nil, fmt.Errorf("the server did not listen within %s:\n%s", timeout, s.OutputTail(outputShown))
		case <-ctx.Done():
			s.Kill()
			return nil, ctx.Err()
		case <-s.out.changed():
		}
	}
}

// StartReady starts the server and returns once its model is loaded; the
// whole start-up must fit in timeout. A server that does not get there is
// killed.
func StartReady(ctx context.Context, spec Spec, timeout time.Duration) (*Server, error) {
	start := time.Now()
	s, err := Start(ctx, spec, timeout)
	if err != nil {
		return nil, err
	}
	if err := s.WaitReady(ctx, timeout-time.Since(start)); err != nil {
		s.Kill()
		return nil, err
	}
	return s, nil
}

// RunToExit runs a server that is expected to stop on its own (a bad model,
// a refused configuration) and returns its exit code, its whole output and
// how long it ran. A server still running after timeout is killed and an
// error returned.
func RunToExit(spec Spec, timeout time.Duration) (code int, output string, elapsed time.Duration, err error) {
	start := time.Now()
	s, err := launch(spec)
	if err != nil {
		return 0, "", 0, err
	}
	if code, err = s.WaitExit(timeout); err != nil {
		s.Kill()
	}
	return code, s.Output(), time.Since(start), err
}

// WaitReady polls GET /health until the model is loaded, the process exits,
// ctx ends or timeout passes.
func (s *Server) WaitReady(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var lastErr error
	ready := func() bool {
		var ok bool
		ok, lastErr = s.modelReady(ctx, client)
		return ok || !s.Alive() || ctx.Err() != nil
	}
	if !Poll(timeout, ready) {
		return fmt.Errorf("the model was not ready within %s (last health check: %v):\n%s", timeout, lastErr, s.OutputTail(outputShown))
	}
	if !s.Alive() {
		return fmt.Errorf("the server exited (code %d) before the model was ready:\n%s", s.exitCode, s.OutputTail(outputShown))
	}
	return ctx.Err()
}

func (s *Server) modelReady(ctx context.Context, client *http.Client) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/health", nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var h struct {
		ModelReady bool `json:"model_ready"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&h); err != nil {
		return false, fmt.Errorf("GET /health: %s: %w", resp.Status, err)
	}
	return h.ModelReady, nil
}

// PID is the server's process id, for /proc.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Output is everything the server wrote to stdout and stderr so far (within
// the bounds outputLog explains).
func (s *Server) Output() string { return s.out.String() }

// OutputTail is the last n bytes of Output, marked as cut when it is.
func (s *Server) OutputTail(n int) string { return Tail(s.Output(), n) }

// Signal sends sig to the server.
func (s *Server) Signal(sig os.Signal) error { return s.cmd.Process.Signal(sig) }

// Exited is closed once the process has been reaped.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Alive reports whether the process is still running, so a server that died
// under load is reported as such rather than as a wall of refused
// connections.
func (s *Server) Alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// WaitExit waits up to timeout for the process to end and returns its exit
// code (-1 when a signal ended it).
func (s *Server) WaitExit(timeout time.Duration) (int, error) {
	select {
	case <-s.exited:
		return s.exitCode, nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("the server was still running %s later", timeout)
	}
}

// Kill ends the process at once and reaps it.
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Stop asks the server to drain (SIGTERM where there is one) and kills it
// if it is still running after grace. For cleanups: it reports nothing.
func (s *Server) Stop(grace time.Duration) {
	if !s.Alive() {
		return
	}
	if err := terminate(s.cmd.Process); err != nil {
		s.Kill()
		return
	}
	if _, err := s.WaitExit(grace); err != nil {
		s.Kill()
	}
}

// CPUTime is the CPU time (user and system) the process used over its life;
// ok is false until it has exited.
func (s *Server) CPUTime() (cpu time.Duration, ok bool) {
	if s.Alive() {
		return 0, false
	}
	st := s.cmd.ProcessState
	return st.UserTime() + st.SystemTime(), true
}
