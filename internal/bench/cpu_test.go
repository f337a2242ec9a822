package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeProc lays out a /proc with a machine total and some processes'
// stat lines.
func writeProc(t *testing.T, dir, stat string, pids map[string]string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o600); err != nil {
		t.Fatal(err)
	}
	for pid, line := range pids {
		if err := os.MkdirAll(filepath.Join(dir, pid), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, pid, "stat"), []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// procStat is a /proc/PID/stat line with utime and stime, its command
// name holding a space and a parenthesis, as a name may.
func procStat(utime, stime string) string {
	return "4242 (dev grantd) x) S 1 4242 4242 0 -1 4194304 102 0 0 0 " + utime + " " + stime + " 7 9 20 0 1 0 1923613 3133440 399\n"
}

// TestSnapCPU reads /proc as Linux lays it out: the machine's busy time
// leaves out idle, iowait and steal, a process's time is utime+stime
// whatever its name holds, and the daemons' are summed.
func TestSnapCPU(t *testing.T) {
	dir := t.TempDir()
	stat := "cpu  100 10 50 1000 40 3 7 500 0 0\ncpu0 50 5 25 500 20 1 3 250 0 0\ncpu1 50 5 25 500 20 2 4 250 0 0\nintr 1 2 3\nctxt 99\n"
	writeProc(t, dir, stat, map[string]string{"self": procStat("30", "5"), "11": procStat("20", "4"), "12": procStat("2", "1")})
	a, err := snapCPU(dir, []int{11, 12})
	if err != nil {
		t.Fatal(err)
	}
	if a.busy != 100+10+50+3+7 || a.cpus != 2 || a.self != 35 || a.daemons != 27 {
		t.Fatalf("snapshot = %+v, want busy 170, 2 cpus, self 35, daemons 27", a)
	}
	if _, err := snapCPU(dir, []int{13}); err == nil {
		t.Fatal("a daemon without /proc/PID/stat gave no error: its time would be missing")
	}
	if _, err := snapCPU(t.TempDir(), nil); err == nil {
		t.Fatal("no /proc/stat gave no error")
	}
}

// TestCPUBetween splits the machine's busy time into the daemons', the
// harness's and the rest, and leaves the daemon out with --target.
func TestCPUBetween(t *testing.T) {
	t0 := time.Now()
	a := cpuSnap{busy: 1000, self: 100, daemons: 200, cpus: 2, at: t0}
	b := cpuSnap{busy: 1800, self: 300, daemons: 600, cpus: 2, at: t0.Add(5 * time.Second)}
	c := cpuBetween(a, b, true)
	if c.Busy != 8*time.Second || c.Harness != 2*time.Second || c.Daemon != 4*time.Second || c.Rest != 2*time.Second || c.Capacity != 10*time.Second {
		t.Fatalf("cpu = %+v", c)
	}
	c = cpuBetween(a, b, false)
	if c.DaemonKnown || c.Daemon != 0 || c.Rest != 6*time.Second {
		t.Fatalf("with a target: cpu = %+v, want no daemon and its time in the rest", c)
	}
}

// TestSnapCPUOnThisMachine reads the real /proc: CPU the test burns shows
// as its own time.
func TestSnapCPUOnThisMachine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	a, err := snapCPU("/proc", []int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the kernel says, through getrusage rather than /proc,
	// that this process used 100 ms of CPU: a busy machine (the whole
	// test suite at once) may give it much less than 100 ms of wall time.
	used := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	from, x := used(), 0
	for deadline := time.Now().Add(time.Minute); used()-from < 100*time.Millisecond; x++ {
		if time.Now().After(deadline) {
			t.Fatal("100 ms of CPU not had in a minute")
		}
	}
	b, err := snapCPU("/proc", []int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	c := cpuBetween(a, b, true)
	// The machine's busy time is sampled at each tick, the process's is
	// not: over a window this short they may differ by a tick or two a CPU.
	slack := time.Duration(2*c.CPUs) * tick
	if c.Harness < 5*tick || c.Daemon != c.Harness || c.Busy+slack < c.Harness || c.CPUs < 1 {
		t.Fatalf("after 100 ms of CPU by getrusage (%d turns): %+v", x, c)
	}
}

// TestMarkdownCPU: the CPU table gives µs per request for each party and
// what a core gives, the rest's per core only on PostgreSQL, the daemon's
// columns empty with --target, and says why when nothing was measured.
func TestMarkdownCPU(t *testing.T) {
	cpu := &CPU{Daemon: 2 * time.Second, DaemonKnown: true, Harness: time.Second, Rest: 4 * time.Second, Busy: 7 * time.Second, Capacity: 10 * time.Second, CPUs: 2}
	rows := []Row{
		{Name: "introspection", Result: Result{Requests: 20000, Elapsed: 5 * time.Second}, CPU: cpu},
		{Name: "no CPU", Result: Result{Requests: 5, Elapsed: 5 * time.Second}},
	}
	var out bytes.Buffer
	(&Report{Rows: rows, Database: "PostgreSQL", Instances: 3}).Markdown(&out)
	md := out.String()
	for _, want := range []string{
		"| path | req/s | busy | daemon µs/req | harness µs/req | rest µs/req | req/s per daemon core | req/s per rest core |",
		"| introspection | 4000 | 70% | 100 | 50.0 | 200 | 10000 | 5000 |",
		"the 3 devicegrantd processes the harness started",
		"the rest of the machine, measured as such",
		"here PostgreSQL",
		"req/s ≤ cores × 1,000,000 ÷ its µs/req",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("no %q in\n%s", want, md)
		}
	}
	if _, table, _ := strings.Cut(md, "CPU time per request"); strings.Contains(table, "| no CPU |") {
		t.Errorf("a row without CPU figures is in the CPU table:\n%s", md)
	}

	out.Reset()
	target := *cpu
	target.DaemonKnown, target.Daemon = false, 0
	(&Report{Rows: []Row{{Name: "introspection", Result: rows[0].Result, CPU: &target}}, Instances: 1}).Markdown(&out)
	md = out.String()
	if !strings.Contains(md, "| introspection | 4000 | 70% |  | 50.0 | 200 |  |\n") || strings.Contains(md, "rest core") {
		t.Errorf("with a target, the daemon's columns are not empty or the rest's per core is shown:\n%s", md)
	}

	out.Reset()
	(&Report{Rows: rows[1:], Database: "SQLite", Instances: 1, CPUMissing: "CPU time not measured for some or all rows (it is read from Linux's /proc): open /proc/stat: no such file"}).Markdown(&out)
	if md = out.String(); !strings.Contains(md, "\nCPU time not measured for some or all rows (it is read from Linux's /proc): open /proc/stat: no such file.\n") || strings.Contains(md, "µs/req") {
		t.Errorf("without /proc the report does not say why:\n%s", md)
	}
}
