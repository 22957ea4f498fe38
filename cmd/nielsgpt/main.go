// Command nielsgpt serves niels-gpt over HTTP and carries the tools around it:
// the checkpoint converter, a terminal chat and the benchmark.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `nielsgpt: run niels-gpt and watch it think.

usage:
  nielsgpt serve   [--model demo|PATH.gguf|PATH.pt] [flags]   HTTP API (docs/API.md) on API_HOST:API_PORT
  nielsgpt convert IN.pt -o OUT.gguf [--f16]                  PyTorch checkpoint to GGUF
  nielsgpt chat    [--model ...] [--trace]                    chat in the terminal
  nielsgpt bench   [flags]                                    load benchmark over loopback
  nielsgpt healthcheck [--port P]                             exit 0 when the local server's model is ready

Run "nielsgpt COMMAND -h" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	commands := map[string]func([]string) error{
		"serve":       runServe,
		"convert":     runConvert,
		"chat":        runChat,
		"bench":       runBench,
		"healthcheck": runHealthcheck,
	}
	name, args := os.Args[1], os.Args[2:]
	if name == "-h" || name == "--help" || name == "help" {
		fmt.Print(usage)
		return
	}
	run, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "nielsgpt: unknown command %q\n\n%s", name, usage)
		os.Exit(2)
	}
	if err := run(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "nielsgpt %s: %v\n", name, err)
		os.Exit(1)
	}
}

// newFlagSet is every subcommand's flag set: errors are returned, not fatal,
// and -h prints the command's own description above its flags.
func newFlagSet(name string, out io.Writer, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, description)
		fs.PrintDefaults()
	}
	return fs
}
