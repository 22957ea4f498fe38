//go:build linux

package reliability

// The soak in miniature, so CI runs every phase of `make soak` on every
// change: 16 workers for 10 s instead of 64 for 3 minutes.

import (
	"strings"
	"testing"
	"time"

	"nielsgpt/internal/testkit"
)

func TestShortSoak(t *testing.T) {
	var progress strings.Builder
	report, err := RunSoak(t.Context(), SoakOptions{
		Exe: testkit.Binary(t), Model: deployedModel(t), Duration: 10 * time.Second, Streams: 16, CapExtra: 4, RateBurst: 3,
		SampleEvery: 500 * time.Millisecond, Seed: 2, Progress: &progress,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	var summary strings.Builder
	_ = report.WriteText(&summary)
	t.Log("\n" + progress.String() + summary.String())
	if !report.OK() {
		t.Fatal("a soak check failed (see the summary above)")
	}
	// Every kind of client really ran, or the checks above prove less
	// than they say.
	for _, kind := range []string{"stream", "cancel", "slow", "full_attn", "bad"} {
		if report.Requests[kind] == 0 {
			t.Errorf("no %s requests in the soak", kind)
		}
	}
}
