package settings

// The table mechanism on its own: which source wins, switches, hidden values,
// and every problem reported at once under the name the user gave.

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"nielsgpt/internal/testkit"
)

type sample struct {
	name   string
	count  int
	on     bool
	secret string
	envTxt string
}

func sampleRows(s *sample) []Row {
	return []Row{
		{Env: "NAME", Flag: "name", Default: "anon", Usage: "who", Apply: func(v string) error { s.name = v; return nil }},
		{Env: "COUNT", Flag: "count", Default: "1", Usage: "how many", Apply: func(v string) (err error) {
			s.count, err = ParseInt(v, 0, 10)
			return err
		}},
		{Env: "ON", Flag: "on", Default: "0", Switch: true, Usage: "switch", Apply: func(v string) (err error) {
			s.on, err = ParseBool(v)
			return err
		}},
		{Env: "SECRET", Secret: true, Apply: func(v string) error {
			if strings.Contains(v, " ") {
				return errors.New("must not contain spaces")
			}
			s.secret = v
			return nil
		}},
		{Env: "ENV_ONLY", Default: "x", Apply: func(v string) error { s.envTxt = v; return nil }},
	}
}

func parse(args []string, env map[string]string, usageOut io.Writer) (sample, error) {
	var s sample
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	err := Parse(fs, args, testkit.EnvLookup(env), sampleRows(&s))
	return s, err
}

func TestSources(t *testing.T) {
	var s sample
	if err := Defaults(sampleRows(&s)); err != nil || s != (sample{name: "anon", count: 1, envTxt: "x"}) {
		t.Fatalf("defaults %+v %v", s, err)
	}
	env := map[string]string{"NAME": "", "COUNT": "3", "ON": "yes", "ENV_ONLY": "y", "SECRET": "k"}
	s, err := parse([]string{"--count", "4"}, env, io.Discard)
	// Set but empty counts as set; a flag beats its variable.
	if err != nil || s != (sample{name: "", count: 4, on: true, secret: "k", envTxt: "y"}) {
		t.Fatalf("env and flags %+v %v", s, err)
	}
	if s, err = parse([]string{"--on"}, nil, io.Discard); err != nil || !s.on {
		t.Fatalf("--on alone: %+v %v", s, err)
	}
	if s, err = parse([]string{"--on=false"}, map[string]string{"ON": "1"}, io.Discard); err != nil || s.on {
		t.Fatalf("--on=false over ON=1: %+v %v", s, err)
	}
	s = sample{}
	if err := FromEnv(testkit.EnvLookup(env), sampleRows(&s)); err != nil || s.count != 3 || !s.on {
		t.Fatalf("from the environment %+v %v", s, err)
	}
}

func TestProblems(t *testing.T) {
	_, err := parse([]string{"--count=11"}, map[string]string{"ON": "maybe", "SECRET": "a b"}, io.Discard)
	want := "invalid configuration:\n" +
		`  --count: invalid value "11": must be an integer in [0, 10]` + "\n" +
		`  ON: invalid value "maybe": must be a boolean (1/0, true/false, yes/no, on/off)` + "\n" +
		`  SECRET: invalid value (hidden): must not contain spaces`
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want\n%s", err, want)
	}
	if _, err := parse([]string{"stray"}, nil, io.Discard); err == nil || err.Error() != `unexpected argument "stray" (flags only; see tool -h)` {
		t.Fatalf("positional argument: %v", err)
	}
	if _, err := parse([]string{"-h"}, nil, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	var usage strings.Builder
	_, _ = parse([]string{"-h"}, nil, &usage)
	if !strings.Contains(usage.String(), "how many (env COUNT)") || strings.Contains(usage.String(), "SECRET") {
		t.Fatalf("usage:\n%s", usage.String())
	}
}

func TestParsers(t *testing.T) {
	if d, err := ParseDuration(" 5s "); err != nil || d != 5*time.Second {
		t.Fatalf("5s: %v %v", d, err)
	}
	for _, bad := range []string{"30", "-1s", "0s", "soon"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("duration %q accepted", bad)
		}
	}
	for v, want := range map[string]bool{"1": true, "ON": true, " yes": true, "": false, "off": false} {
		if got, err := ParseBool(v); err != nil || got != want {
			t.Errorf("ParseBool(%q) = %v, %v", v, got, err)
		}
	}
	if _, err := ParseInt("2.5", 0, 10); err == nil {
		t.Error("2.5 accepted as an integer")
	}
}
