package bench

// The server under test, as a subprocess: the real `nielsgpt serve` binary on
// a loopback port, so the benchmark measures what users get (HTTP, SSE
// framing, JSON encoding, the scheduler), not a function call.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// serverProc is a running `nielsgpt serve`.
type serverProc struct {
	cmd     *exec.Cmd
	baseURL string // http://127.0.0.1:PORT
	out     *tailBuffer
	exited  chan struct{} // closed once the process has been reaped
	waitErr error         // valid after exited is closed
}

// serverSpec says how to start one.
type serverSpec struct {
	exe      string
	model    string
	threads  int
	baseline bool
	env      []string // KEY=VALUE overrides on top of the bench's environment
}

// startServer starts the server and waits until /health says the model is
// ready. The port is picked free just before the start; if another process
// takes it in between, the start is retried once on a fresh port.
func startServer(ctx context.Context, spec serverSpec, readyTimeout time.Duration) (*serverProc, error) {
	var lastErr error
	for range 2 {
		port, err := freeLoopbackPort()
		if err != nil {
			return nil, err
		}
		p, err := launch(spec, port)
		if err != nil {
			return nil, err
		}
		if err := p.waitReady(ctx, readyTimeout); err != nil {
			p.stop(5 * time.Second)
			lastErr = err
			if p.out.contains("address already in use") {
				continue
			}
			return nil, err
		}
		return p, nil
	}
	return nil, lastErr
}

func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func launch(spec serverSpec, port int) (*serverProc, error) {
	args := []string{"serve", "--model", spec.model, "--host", "127.0.0.1", "--port", strconv.Itoa(port)}
	if spec.baseline {
		args = append(args, "--baseline")
	}
	cmd := exec.Command(spec.exe, args...)
	// Later entries win in exec's environment handling, so these override
	// whatever the user's shell exports.
	cmd.Env = append(os.Environ(), spec.env...)
	cmd.Env = append(cmd.Env, "THREADS="+strconv.Itoa(spec.threads))
	out := newTailBuffer(64 << 10)
	cmd.Stdout, cmd.Stderr = out, out
	setChildAttrs(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the server: %w", err)
	}
	p := &serverProc{cmd: cmd, baseURL: "http://127.0.0.1:" + strconv.Itoa(port), out: out, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// waitReady polls GET /health until model_ready, the process exits, or the
// timeout passes.
func (p *serverProc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		ready, err := p.healthy(ctx, client)
		if ready {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("the server exited before it was ready (%v); its last output:\n%s", p.waitErr, p.out.String())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server was not ready after %s (last health check: %v); its last output:\n%s", timeout, err, p.out.String())
		}
	}
}

func (p *serverProc) healthy(ctx context.Context, client *http.Client) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.baseURL+"/health", nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var h struct {
		OK         bool `json:"ok"`
		ModelReady bool `json:"model_ready"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&h); err != nil {
		return false, fmt.Errorf("GET /health: %s: %w", resp.Status, err)
	}
	return resp.StatusCode == http.StatusOK && h.ModelReady, nil
}

// stop asks the server to drain (SIGTERM where there is one) and kills it if
// it has not exited within grace.
func (p *serverProc) stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	if err := terminate(p.cmd.Process); err != nil {
		_ = p.cmd.Process.Kill()
	}
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// alive reports whether the process is still running, so a server that died
// mid-benchmark is reported as such rather than as a wall of refused
// connections.
func (p *serverProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// tailBuffer keeps the last max bytes written to it: the server's log, kept
// only to explain a failure, must not grow with the length of the run.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func (t *tailBuffer) contains(s string) bool {
	return strings.Contains(t.String(), s)
}
