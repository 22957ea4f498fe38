// Package settings reads a command's configuration from one table: each row
// names an environment variable, a flag (either may be absent), a default,
// the usage text and how to apply a value. Driving the environment, the
// flags, the defaults and the validation from the same rows means a setting
// cannot be readable one way and not the other, and every bad value is
// refused at start-up with its name and the reason. Packages declare their
// own rows; a command may parse the rows of several packages into one
// FlagSet, so users see one -h listing. The variables themselves are
// documented for users in docs/API.md.
package settings

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Row is one setting. Env or Flag may be empty when a value is only settable
// one way (a token never appears as a flag, so it cannot leak through the
// process list). Apply parses the text and stores the value; its error says
// what a valid value looks like, and Parse adds which setting was wrong.
type Row struct {
	Env, Flag, Default, Usage string
	// Switch makes the flag a boolean one: `--offline` alone means on, as
	// users expect, while `--offline=0` and the environment variable keep
	// ParseBool's spellings.
	Switch bool
	// Secret keeps the value out of error messages.
	Secret bool
	Apply  func(v string) error
}

// Parse registers the rows that have a flag on fs, parses args (flags only,
// without the subcommand name), and applies every row: its default, replaced
// by its environment variable when lookupEnv finds it, replaced by its flag
// when args give it. A variable that is set but empty counts as set, so that
// an empty list can switch a feature off. flag.ErrHelp is returned for -h;
// fs's Usage and output are left to the caller.
func Parse(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool), rows []Row) error {
	for _, r := range rows {
		if r.Flag == "" {
			continue
		}
		usage := r.Usage
		if r.Env != "" {
			usage += " (env " + r.Env + ")"
		}
		if r.Switch {
			value := switchText(r.Default)
			fs.Var(&value, r.Flag, usage)
		} else {
			fs.String(r.Flag, r.Default, usage)
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags only; see %s -h)", fs.Arg(0), fs.Name())
	}
	return apply(rows, lookupEnv, fs)
}

// FromEnv applies every row from its default or its environment variable;
// no flag is read.
func FromEnv(lookupEnv func(string) (string, bool), rows []Row) error {
	return apply(rows, lookupEnv, nil)
}

// Defaults applies every row's default.
func Defaults(rows []Row) error {
	return apply(rows, func(string) (string, bool) { return "", false }, nil)
}

// apply gives each row its value and collects every problem, so that a user
// fixes all of them in one go rather than one per start.
func apply(rows []Row, lookupEnv func(string) (string, bool), fs *flag.FlagSet) error {
	given := map[string]bool{}
	if fs != nil {
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	}
	var problems []string
	for _, r := range rows {
		value, source := r.Default, ""
		if r.Env != "" {
			if v, ok := lookupEnv(r.Env); ok {
				value, source = v, r.Env
			}
		}
		if r.Flag != "" && given[r.Flag] {
			value, source = fs.Lookup(r.Flag).Value.String(), "--"+r.Flag
		}
		if err := r.Apply(value); err != nil {
			if source == "" { // a bad default: name the setting as users know it
				source = r.Env
				if source == "" {
					source = "--" + r.Flag
				}
			}
			shown := strconv.Quote(value)
			if r.Secret {
				shown = "(hidden)"
			}
			problems = append(problems, fmt.Sprintf("%s: invalid value %s: %v", source, shown, err))
		}
	}
	if len(problems) > 0 {
		return errors.New("invalid configuration:\n  " + strings.Join(problems, "\n  "))
	}
	return nil
}

// switchText is a flag.Value that keeps the text for ParseBool and lets the
// flag package accept the flag without a value.
type switchText string

func (s *switchText) String() string     { return string(*s) }
func (s *switchText) Set(v string) error { *s = switchText(v); return nil }
func (s *switchText) IsBoolFlag() bool   { return true }

// ParseInt reads an integer in [lo, hi].
func ParseInt(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("must be an integer in [%d, %d]", lo, hi)
	}
	return n, nil
}

// ParseBool accepts what huggingface_hub accepts for its switches, so the
// same environment works for the Python tools and for this program.
func ParseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true, nil
	case "", "0", "false", "no", "off":
		return false, nil
	}
	return false, errors.New("must be a boolean (1/0, true/false, yes/no, on/off)")
}

// ParseDuration reads a positive Go duration; a bare number is refused
// because its unit would be a guess.
func ParseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d <= 0 {
		return 0, errors.New(`must be a positive duration such as "30s"`)
	}
	return d, nil
}

// Int, Bool, Duration and NonEmpty are the Apply functions of the common
// kinds of setting: each parses the value into dst, or says what it must be.

func Int(dst *int, lo, hi int) func(string) error {
	return func(v string) (err error) {
		*dst, err = ParseInt(v, lo, hi)
		return err
	}
}

func Bool(dst *bool) func(string) error {
	return func(v string) (err error) {
		*dst, err = ParseBool(v)
		return err
	}
}

func Duration(dst *time.Duration) func(string) error {
	return func(v string) (err error) {
		*dst, err = ParseDuration(v)
		return err
	}
}

func NonEmpty(dst *string) func(string) error {
	return func(v string) error {
		if v == "" {
			return errors.New("must not be empty")
		}
		*dst = v
		return nil
	}
}
