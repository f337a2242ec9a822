// Command devicegrant-bench measures devicegrantd's hot paths next to a
// bare gin handler of the same shape and prints a Markdown table, with
// (on Linux) the CPU time each request cost the daemons, the harness and
// the rest of the machine.
//
//	go run ./cmd/devicegrant-bench            # a fresh daemon, 5 s per row
//	go run ./cmd/devicegrant-bench --smoke    # a second per row, small sizes
//	go run ./cmd/devicegrant-bench --target https://auth.example.org/ \
//	    --secret "$HOMESERVER_SECRET" --username bench --password '…'
//	go run ./cmd/devicegrant-bench --database postgres:///bench --instances 3
//
// Run it on an otherwise idle machine; the figures to compare across
// machines are the ratios.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/devicegrant/devicegrant/internal/bench"
)

func main() {
	// The harness runs the bare handler as a process of its own: this
	// executable, called with --serve-bare ADDR.
	if len(os.Args) == 3 && os.Args[1] == "--serve-bare" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		if err := bench.ServeBare(ctx, os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "devicegrant-bench:", err)
			os.Exit(1)
		}
		return
	}
	var o bench.Options
	smoke := flag.Bool("smoke", false, "a quick run to check the harness works: 1 s per row, 4 chains, 200 pending pairings")
	flag.DurationVar(&o.Duration, "duration", 5*time.Second, "how long each row is measured")
	flag.IntVar(&o.Conns, "conns", 16, "concurrent connections")
	flag.IntVar(&o.Chains, "chains", 32, "concurrent refresh chains")
	flag.IntVar(&o.Pending, "pending", 10000, "pending pairings held for the memory row")
	flag.StringVar(&o.Target, "target", "", "base `URL` of a running devicegrantd (default: start a fresh one)")
	flag.StringVar(&o.Secret, "secret", "", "with --target: the homeserver secret, for introspection")
	flag.StringVar(&o.Username, "username", "", "with --target: an account that approves the benchmark's devices")
	flag.StringVar(&o.Password, "password", "", "with --target: its password")
	flag.StringVar(&o.Database, "database", "", "the started daemon's database: a postgres:// `URL` of an empty database (default: a fresh SQLite file)")
	flag.IntVar(&o.Instances, "instances", 1, "with a postgres:// --database: how many devicegrantd processes to start on it; requests go round robin to them")
	flag.StringVar(&o.Binary, "binary", "", "a devicegrantd binary to start (default: go build -tags nomsgpack ./cmd/devicegrantd)")
	flag.StringVar(&o.WorkDir, "workdir", "", "keep the database and logs in this directory (default: a temporary one)")
	flag.Parse()
	if *smoke {
		o.Duration, o.Chains, o.Pending, o.Conns = time.Second, 4, 200, 4
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devicegrant-bench:", err)
		os.Exit(1)
	}
	o.Bare = []string{self, "--serve-bare"}
	o.Progress = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := bench.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devicegrant-bench:", err)
		os.Exit(1)
	}
	fmt.Printf("Machine: %s.\n\n", bench.Machine(ctx))
	rep.Markdown(os.Stdout)
	// A row whose requests failed measured nothing: say so in the exit
	// status, so the smoke run in the test command catches a broken path.
	for _, r := range rep.Rows {
		if r.Result.Errors > 0 || r.Result.Requests == 0 {
			fmt.Fprintf(os.Stderr, "devicegrant-bench: %q: %d requests, %d errors, the first: %s (see the daemon's log with --workdir)\n", r.Name, r.Result.Requests, r.Result.Errors, r.Result.Example)
			os.Exit(1)
		}
	}
}
