package bench

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// Markdown writes the report as the README shows it.
func (rep *Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "%d connections, %s per row, keep-alive HTTP/1.1 on loopback.", rep.Conns, rep.Duration)
	if rep.Instances > 1 {
		fmt.Fprintf(w, " %d devicegrantd instances on one database, requests round robin; memory and start-up rows are the first instance's.", rep.Instances)
	}
	fmt.Fprint(w, "\n\n")
	fmt.Fprintln(w, "| path | req/s | p50 | p99 | errors | bare gin req/s | ratio | goal | met |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---|---|")
	for _, r := range rep.Rows {
		bare, ratio := "", ""
		if r.Bare != nil {
			bare = fmt.Sprintf("%.0f", r.Bare.PerSecond())
			if r.Bare.PerSecond() > 0 {
				ratio = fmt.Sprintf("%.2f×", r.Result.PerSecond()/r.Bare.PerSecond())
			}
		}
		name := r.Name
		if r.Note != "" {
			name += " (" + r.Note + ")"
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %d | %s | %s | %s | %s |\n", name, r.Result.PerSecond(),
			ms(r.Result.P50), ms(r.Result.P99), r.Result.Errors, bare, ratio, r.Goal, yes(r.Met))
	}
	if rep.RSSIdle > 0 {
		fmt.Fprintf(w, "| RSS idle (%.1f MB anonymous, %.1f MB mapped files, %.1f MB of them in 2 MB pages) | %.1f MB | | | | | | ≤ 25 MB | %s |\n",
			mb(rep.RSSIdleAnon), mb(rep.RSSIdle-rep.RSSIdleAnon), mb(rep.RSSIdleHuge), mb(rep.RSSIdle), yes(rep.RSSIdle <= 25<<20))
	}
	if rep.RSSPending > 0 {
		fmt.Fprintf(w, "| RSS with %d pending pairings, before any sign-in | %.1f MB | | | | | | ≤ 60 MB | %s |\n", rep.Pending, mb(rep.RSSPending), yes(rep.RSSPending <= 60<<20))
	}
	if rep.RSSPeak > 0 {
		fmt.Fprintf(w, "| peak RSS over the whole run (VmHWM) | %.1f MB | | | | | | | |\n", mb(rep.RSSPeak))
	}
	if rep.Ready > 0 {
		fmt.Fprintf(w, "| start to /healthz ready | %s | | | | | | ≤ 100 ms | %s |\n", ms(rep.Ready), yes(rep.Ready <= 100*time.Millisecond))
	}
	if rep.BinarySize > 0 {
		fmt.Fprintf(w, "| binary size | %.1f MB | | | | | | | |\n", mb(rep.BinarySize))
	}
	rep.cpuMarkdown(w)
}

// cpuMarkdown writes the CPU time per request of each row that has it,
// with the requests a core gives each party, or why nothing was measured.
func (rep *Report) cpuMarkdown(w io.Writer) {
	var rows []Row
	cpus := 0
	for _, r := range rep.Rows {
		if r.CPU != nil && r.Result.Requests > 0 {
			rows, cpus = append(rows, r), r.CPU.CPUs
		}
	}
	if rep.CPUMissing != "" {
		// Before the table: a row left out of it is left out for this.
		fmt.Fprintf(w, "\n%s.\n", rep.CPUMissing)
	}
	if len(rows) == 0 {
		return
	}
	pg := rep.Database == "PostgreSQL"
	fmt.Fprint(w, "\nCPU time per request in each row's measured window, from /proc: ")
	switch {
	case rep.Database == "":
		fmt.Fprint(w, "*daemon* is left empty, as the harness did not start the daemon at --target (if it runs on this machine, its time is in *rest*)")
	case rep.Instances > 1:
		fmt.Fprintf(w, "*daemon*, the %d devicegrantd processes the harness started (user and system time, summed)", rep.Instances)
	default:
		fmt.Fprint(w, "*daemon*, the devicegrantd process the harness started (user and system time)")
	}
	fmt.Fprint(w, "; *harness*, this load generator; *rest*, the rest of the machine, measured as such (all CPUs' busy time minus those two)")
	if pg {
		fmt.Fprint(w, ", here PostgreSQL, with whatever else ran meanwhile")
	}
	fmt.Fprintf(w, ". *Busy* is the share of the %d CPUs' time the window used. "+
		"Where a party has whole cores to itself, a row's ceiling is req/s ≤ cores × 1,000,000 ÷ its µs/req; "+
		"the per-core columns are that for one core (a whole device flow counts as one request).\n\n", cpus)
	head, rule := "| path | req/s | busy | daemon µs/req | harness µs/req | rest µs/req | req/s per daemon core |", "|---|---:|---:|---:|---:|---:|---:|"
	if pg {
		head, rule = head+" req/s per rest core |", rule+"---:|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, rule)
	for _, r := range rows {
		c := r.CPU
		busy := ""
		if c.Capacity > 0 {
			busy = fmt.Sprintf("%.0f%%", 100*float64(c.Busy)/float64(c.Capacity))
		}
		daemon, perDaemon := "", ""
		if c.DaemonKnown {
			us := perRequest(c.Daemon, r.Result)
			daemon, perDaemon = micros(us), perCore(us)
		}
		rest := perRequest(c.Rest, r.Result)
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %s | %s |", r.Name, r.Result.PerSecond(), busy,
			daemon, micros(perRequest(c.Harness, r.Result)), micros(rest), perDaemon)
		if pg {
			fmt.Fprintf(w, " %s |", perCore(rest))
		}
		fmt.Fprintln(w)
	}
}

// micros formats a CPU time per request in microseconds.
func micros(us float64) string {
	if us >= 100 || us <= -100 {
		return fmt.Sprintf("%.0f", us)
	}
	return fmt.Sprintf("%.1f", us)
}

// perCore is the requests per second one core gives at us per request;
// empty where nothing (or less than nothing, a tick's error) was spent.
func perCore(us float64) string {
	if us <= 0 {
		return ""
	}
	return fmt.Sprintf("%.0f", 1e6/us)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// Machine describes this machine in one line for the report.
func Machine(ctx context.Context) string {
	cpu := "unknown CPU"
	if out, err := exec.CommandContext(ctx, "sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		cpu = strings.TrimSpace(string(out))
	}
	cores := "?"
	if out, err := exec.CommandContext(ctx, "nproc").Output(); err == nil {
		cores = strings.TrimSpace(string(out))
	}
	gov := ""
	if out, err := exec.CommandContext(ctx, "go", "version").Output(); err == nil {
		gov = strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("%s cores, %s, %s", cores, cpu, gov)
}
