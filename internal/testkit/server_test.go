package testkit

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"nielsgpt/internal/harness"
)

// The harness's tests start this very test binary as the "server": with
// TESTKIT_FAKE_SERVER set, TestMain plays a tiny `nielsgpt serve` instead of
// running the tests, so the harness is checked without building the real
// binary.
func TestMain(m *testing.M) {
	if mode := os.Getenv("TESTKIT_FAKE_SERVER"); mode != "" {
		os.Exit(fakeServe(mode))
	}
	Main(m)
}

// fakeServe logs what it was started with as JSON lines, then either fails
// like a server refusing its model ("exit") or listens on the port it was
// given, answers /health, and exits 0 on SIGTERM ("serve").
func fakeServe(mode string) int {
	logLine := func(v map[string]any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(os.Stderr, "%s\n", b)
	}
	logLine(map[string]any{"msg": "started", "args": os.Args[1:], "threads": os.Getenv("THREADS"),
		"log_format": os.Getenv("LOG_FORMAT"), "leak": os.Getenv("TESTKIT_LEAK")})
	if mode == "exit" {
		fmt.Fprintln(os.Stderr, "nielsgpt serve: model.gguf: not a GGUF file")
		return 3
	}
	terms := make(chan os.Signal, 1)
	signal.Notify(terms, syscall.SIGTERM, os.Interrupt)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	logLine(map[string]any{"msg": "listening", "addr": ln.Addr().String()})
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"ok":true,"model_ready":true}`)
	}))
	<-terms
	logLine(map[string]any{"msg": "stopped"})
	return 0
}

func fakeSpec(mode string, env ...string) harness.Spec {
	return harness.Spec{Exe: os.Args[0], Model: "model.gguf", Args: []string{"--baseline"},
		Env: append([]string{"TESTKIT_FAKE_SERVER=" + mode}, env...)}
}

func TestServeStartsReadyAndStops(t *testing.T) {
	t.Setenv("TESTKIT_LEAK", "from the developer's shell")
	s := Serve(t, fakeSpec("serve", "THREADS=3", "LOG_FORMAT=text"))
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") || s.URL != "http://"+s.Addr {
		t.Fatalf("addr %q, URL %q", s.Addr, s.URL)
	}
	resp, err := http.Get(s.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	s.Stop(5 * time.Second)
	if code, err := s.WaitExit(time.Second); err != nil || code != 0 {
		t.Fatalf("exit %d, %v", code, err)
	}
	if s.Alive() {
		t.Fatal("alive after Stop")
	}
	if cpu, ok := s.CPUTime(); !ok || cpu <= 0 {
		t.Errorf("CPU time %v %v", cpu, ok)
	}
	out := s.Output()
	for _, want := range []string{
		// Port 0 and the spec's model and flags, in that order.
		`"args":["serve","--host","127.0.0.1","--port","0","--model","model.gguf","--baseline"]`,
		`"threads":"3"`,            // the spec's Env overrides the base THREADS=1
		`"log_format":"json"`,      // but never the JSON logs the harness parses
		`"leak":""`,                // nothing of this process's environment but PATH, HOME, TMPDIR
		`{"msg":"stopped"}` + "\n", // SIGTERM, and the output until the end
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
}

func TestInheritEnvPassesTheCallersSettings(t *testing.T) {
	t.Setenv("TESTKIT_LEAK", "wanted")
	spec := fakeSpec("exit")
	spec.InheritEnv = true
	_, out, _, err := harness.RunToExit(spec, 30*time.Second)
	if err != nil || !strings.Contains(out, `"leak":"wanted"`) || !strings.Contains(out, `"threads":"1"`) {
		t.Fatalf("%v:\n%s", err, out)
	}
}

func TestRunToExitAndFailedStarts(t *testing.T) {
	code, out, _, err := harness.RunToExit(fakeSpec("exit"), 30*time.Second)
	if err != nil || code != 3 || !strings.HasSuffix(out, "nielsgpt serve: model.gguf: not a GGUF file\n") {
		t.Fatalf("exit %d, %v, output:\n%s", code, err, out)
	}
	_, err = harness.Start(t.Context(), fakeSpec("exit"), 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited (code 3) before listening") || !strings.Contains(err.Error(), "not a GGUF file") {
		t.Fatalf("harness.Start of a server that exits: %v", err)
	}
	_, err = harness.Start(t.Context(), harness.Spec{Exe: "/nonexistent/nielsgpt"}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/nielsgpt") {
		t.Fatalf("harness.Start of a missing binary: %v", err)
	}
}
