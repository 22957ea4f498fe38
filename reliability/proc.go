//go:build linux

package reliability

// The server under test: the real binary as a subprocess. bench has its own
// launcher, but it hides the process (no signals of our choosing, no exit
// code, only the tail of the output); these tests need all three, and they
// let the server pick its own port (--port 0, read back from its "listening"
// log line), so no port can be stolen between choosing and binding it.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ServerSpec says how to start `nielsgpt serve`.
type ServerSpec struct {
	Exe   string   // the nielsgpt binary
	Model string   // --model; "" leaves it to CKPT_DIR and the Hub
	Args  []string // more serve flags
	// Env is KEY=VALUE on top of a small base environment (PATH, HOME,
	// TMPDIR): the developer's own HF_TOKEN, MODEL or limits must not leak
	// into a test. Later entries win.
	Env []string
}

// Server is a running (or finished) `nielsgpt serve`.
type Server struct {
	URL  string // http://127.0.0.1:PORT
	Addr string // 127.0.0.1:PORT

	cmd      *exec.Cmd
	out      *outputLog
	exited   chan struct{}
	exitCode int // valid once exited is closed; -1 when killed by a signal
}

func (spec ServerSpec) command() *exec.Cmd {
	args := []string{"serve", "--host", "127.0.0.1", "--port", "0"}
	if spec.Model != "" {
		args = append(args, "--model", spec.Model)
	}
	args = append(args, spec.Args...)
	cmd := exec.Command(spec.Exe, args...)
	var env []string
	for _, key := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(key); ok {
			env = append(env, key+"="+v)
		}
	}
	// JSON logs: the "listening" line is parsed, and a test greps the rest.
	// One engine thread leaves the second core to the client side.
	env = append(env, "LOG_FORMAT=json", "THREADS=1")
	cmd.Env = append(env, spec.Env...)
	// If the test binary dies without stopping the server, the kernel does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func launch(spec ServerSpec) (*Server, error) {
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

// Start starts the server and returns once it listens (not once the model
// is loaded: see WaitReady).
func Start(ctx context.Context, spec ServerSpec, timeout time.Duration) (*Server, error) {
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
			return nil, fmt.Errorf("the server exited (code %d) before listening:\n%s", s.exitCode, s.Output())
		case <-deadline:
			s.Kill()
			return nil, fmt.Errorf("the server did not listen within %s:\n%s", timeout, s.Output())
		case <-ctx.Done():
			s.Kill()
			return nil, ctx.Err()
		case <-s.out.changed():
		}
	}
}

// RunToExit runs a server that is expected to stop on its own (a bad model,
// a refused configuration) and returns its exit code, its whole output and
// how long it ran. A server still running after timeout is killed and an
// error returned.
func RunToExit(spec ServerSpec, timeout time.Duration) (code int, output string, elapsed time.Duration, err error) {
	start := time.Now()
	s, err := launch(spec)
	if err != nil {
		return 0, "", 0, err
	}
	select {
	case <-s.exited:
		return s.exitCode, s.Output(), time.Since(start), nil
	case <-time.After(timeout):
		s.Kill()
		return s.exitCode, s.Output(), time.Since(start), fmt.Errorf("still running after %s", timeout)
	}
}

// WaitReady polls /health until the model is loaded.
func (s *Server) WaitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(s.URL + "/health")
		if err == nil {
			var h struct {
				ModelReady bool `json:"model_ready"`
			}
			err = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&h)
			resp.Body.Close()
			if err == nil && h.ModelReady {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("the server exited (code %d) before the model was ready:\n%s", s.exitCode, s.Output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the model was not ready within %s (last: %v):\n%s", timeout, err, s.Output())
		}
	}
}

// PID is the server's process id, for /proc.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Output is everything the server wrote to stdout and stderr so far.
func (s *Server) Output() string { return s.out.String() }

// Signal sends sig to the server.
func (s *Server) Signal(sig os.Signal) error { return s.cmd.Process.Signal(sig) }

// Exited is closed once the process has been reaped.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// WaitExit waits up to timeout for the process to end and returns its exit
// code (-1 when a signal killed it).
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

// Stop asks the server to drain (SIGTERM) and kills it if it is still
// running after grace. For cleanups: it reports nothing.
func (s *Server) Stop(grace time.Duration) {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.Signal(syscall.SIGTERM)
	if _, err := s.WaitExit(grace); err != nil {
		s.Kill()
	}
}

// outputLog collects the server's output. It keeps everything up to a cap
// (a soak writes one access-log line per request; tens of MiB would mean a
// runaway server, and the tests only need the start and the end), and wakes
// Start whenever something arrives.
type outputLog struct {
	mu      sync.Mutex
	buf     []byte
	dropped int64
	notify  chan struct{}
}

const outputCap = 32 << 20

func newOutputLog() *outputLog { return &outputLog{notify: make(chan struct{})} }

func (o *outputLog) Write(b []byte) (int, error) {
	n := len(b) // reported in full even when dropped: a short write would fail the child's logging
	o.mu.Lock()
	defer o.mu.Unlock()
	if room := outputCap - len(o.buf); room < len(b) {
		o.dropped += int64(len(b) - max(room, 0))
		b = b[:max(room, 0)]
	}
	o.buf = append(o.buf, b...)
	close(o.notify)
	o.notify = make(chan struct{})
	return n, nil
}

func (o *outputLog) changed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.notify
}

func (o *outputLog) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dropped > 0 {
		return string(o.buf) + fmt.Sprintf("\n[reliability: %d more bytes of output dropped]\n", o.dropped)
	}
	return string(o.buf)
}

// listeningAddr finds the address in the server's `"msg":"listening"` line.
func (o *outputLog) listeningAddr() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, line := range bytes.Split(o.buf, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"msg":"listening"`)) {
			continue
		}
		var entry struct {
			Addr string `json:"addr"`
		}
		if json.Unmarshal(line, &entry) == nil && strings.HasPrefix(entry.Addr, "127.0.0.1:") {
			return entry.Addr
		}
	}
	return ""
}
