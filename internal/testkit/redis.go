//go:build unix

package testkit

// A real redis-server for the tests of the shared rate-limit buckets: its
// own process on a free loopback port, nothing saved to disk, killed when
// the test ends. Tests kill and restart it on the same port (the servers
// under test keep their REDIS_URL) and freeze it to make it slow rather
// than gone. A fake would only show that we agree with ourselves about
// what Redis does.

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nielsgpt/internal/harness"
)

// Redis is one redis-server process owned by a test.
type Redis struct {
	URL  string // redis://127.0.0.1:PORT/0
	Addr string // 127.0.0.1:PORT

	t      testing.TB
	exe    string
	dir    string
	cmd    *exec.Cmd
	out    *SyncBuffer
	exited chan struct{}
}

// redisStartTimeout bounds one start; redis-server is up in milliseconds.
const redisStartTimeout = 10 * time.Second

// StartRedis starts redis-server for the length of the test. A machine
// without it fails the test, naming the package to install: these tests
// are about a real Redis and must not pass by not running.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	exe, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is missing: the shared rate-limit tests run a real Redis (Debian: apt-get install redis-server; .ci/run installs it)")
	}
	r := &Redis{t: t, exe: exe, dir: t.TempDir()}
	t.Cleanup(r.Kill)
	// A port chosen by the kernel may be taken again before redis-server
	// binds it; try a few.
	for attempt := 0; ; attempt++ {
		r.Addr = freeLoopbackAddr(t)
		r.URL = "redis://" + r.Addr + "/0"
		if err = r.start(); err == nil {
			return r
		}
		if attempt == 4 {
			t.Fatal(err)
		}
	}
}

func freeLoopbackAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (r *Redis) start() error {
	_, port, _ := net.SplitHostPort(r.Addr)
	r.out = &SyncBuffer{}
	r.cmd = exec.Command(r.exe, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--logfile", "", "--daemonize", "no")
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	exited := make(chan struct{})
	r.exited = exited
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(exited) }(r.cmd)
	if !harness.Poll(redisStartTimeout, func() bool { return r.answers() || !r.running() }) || !r.running() {
		r.Kill()
		return fmt.Errorf("redis-server on %s did not start:\n%s", r.Addr, harness.Tail(r.out.String(), 2000))
	}
	return nil
}

// answers sends PING over a fresh connection and expects +PONG.
func (r *Redis) answers() bool {
	conn, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.TrimSpace(line) == "+PONG"
}

func (r *Redis) running() bool {
	select {
	case <-r.exited:
		return false
	default:
		return true
	}
}

// Kill ends redis-server at once (SIGKILL: a crash, not a shutdown) and
// waits for it; what it held is gone.
func (r *Redis) Kill() {
	if r.cmd == nil || !r.running() {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
}

// Restart starts a fresh, empty redis-server on the same address.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Kill()
	var err error
	// The old socket may linger for a moment after the kill.
	for attempt := 0; attempt < 20; attempt++ {
		if err = r.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatal(err)
}

// Pause freezes redis-server (SIGSTOP): connections still open, but nothing
// is answered, which is what a Redis that is slow looks like from outside.
func (r *Redis) Pause() { r.signal(syscall.SIGSTOP) }

// Resume lets a paused redis-server run again.
func (r *Redis) Resume() { r.signal(syscall.SIGCONT) }

func (r *Redis) signal(sig syscall.Signal) {
	r.t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("redis-server %s: %v", sig, err)
	}
}

// SyncBuffer is a bytes.Buffer one goroutine writes while another reads: a
// server's log or redis-server's output while a test inspects it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
