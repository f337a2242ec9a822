package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPU is the processor time each party spent in one row's measured
// window, read from Linux's /proc. It says how many requests a core gives
// each party, which a shared machine's throughput cannot: there the load
// generator, the database and the daemons take turns on the same cores.
type CPU struct {
	// Daemon is the devicegrantd processes' time (user and system,
	// summed over instances); DaemonKnown is false with --target, whose
	// daemon the harness did not start and cannot tell apart.
	Daemon      time.Duration
	DaemonKnown bool
	// Harness is this process's time: the load generator.
	Harness time.Duration
	// Rest is the whole machine's busy time minus the two above:
	// PostgreSQL on a postgres:// run, and anything else running then.
	Rest time.Duration
	// Busy is the whole machine's busy time; Capacity is the window
	// times the number of CPUs, so Busy/Capacity is how loaded it was.
	Busy, Capacity time.Duration
	// CPUs is how many CPUs the machine has online.
	CPUs int
}

// perRequest returns d per request of r, in microseconds.
func perRequest(d time.Duration, r Result) float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(d) / float64(time.Microsecond) / float64(r.Requests)
}

// tick is the unit of /proc's CPU times: USER_HZ, which Linux fixes at
// 100 for what it exports to user space on every architecture Go runs
// on, whatever the kernel's own tick rate. A row's window of seconds
// holds hundreds of them, enough for per-request figures to a few per
// cent.
const tick = 10 * time.Millisecond

// cpuSnap is the cumulative CPU counters at one moment, in ticks.
type cpuSnap struct {
	busy, self, daemons int64
	cpus                int
	at                  time.Time
}

// snapCPU reads the machine's, this process's and pids' CPU time. An
// error means /proc is not there (not Linux) or not readable; a pid that
// has exited is an error too, as its time would be missing.
func snapCPU(procDir string, pids []int) (cpuSnap, error) {
	s := cpuSnap{at: time.Now()}
	var err error
	if s.busy, s.cpus, err = machineBusy(filepath.Join(procDir, "stat")); err != nil {
		return s, err
	}
	if s.self, err = processTicks(filepath.Join(procDir, "self", "stat")); err != nil {
		return s, err
	}
	for _, pid := range pids {
		t, err := processTicks(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
		if err != nil {
			return s, err
		}
		s.daemons += t
	}
	return s, nil
}

// cpuBetween is what the machine spent between two snapshots.
func cpuBetween(a, b cpuSnap, daemonKnown bool) *CPU {
	busy := time.Duration(b.busy-a.busy) * tick
	c := &CPU{
		Busy:        busy,
		Capacity:    b.at.Sub(a.at) * time.Duration(b.cpus),
		Harness:     time.Duration(b.self-a.self) * tick,
		DaemonKnown: daemonKnown,
		CPUs:        b.cpus,
	}
	if daemonKnown {
		c.Daemon = time.Duration(b.daemons-a.daemons) * tick
	}
	// The machine's counters are sampled at each tick, a process's may
	// be exact: on an otherwise idle SQLite run Rest can come out a tick
	// or two below zero, which is shown as measured.
	c.Rest = busy - c.Harness - c.Daemon
	return c
}

// machineBusy returns the busy ticks of all CPUs together from /proc/stat
// (user, nice, system, irq and softirq; guest time is inside user, and
// idle, iowait and time stolen by a hypervisor are not this machine's
// work) and the number of CPUs it lists.
func machineBusy(path string) (int64, int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	var busy int64
	cpus, found := 0, false
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		switch {
		case len(f) == 0 || !strings.HasPrefix(f[0], "cpu"):
		case f[0] == "cpu":
			if len(f) < 8 {
				return 0, 0, fmt.Errorf("%s: short cpu line", path)
			}
			for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
				v, err := strconv.ParseInt(f[i], 10, 64)
				if err != nil {
					return 0, 0, fmt.Errorf("%s: %w", path, err)
				}
				busy += v
			}
			found = true
		default:
			cpus++
		}
	}
	if !found || cpus == 0 {
		return 0, 0, fmt.Errorf("%s: no cpu lines", path)
	}
	return busy, cpus, nil
}

// processTicks returns utime+stime of a /proc/PID/stat file: all the
// process's threads, not its children.
func processTicks(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces
	// or parentheses itself: the fields that follow start after the last
	// ')'. utime and stime are fields 14 and 15, so the 12th and 13th
	// after it.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no command name", path)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New(path + ": too few fields")
	}
	var sum int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		sum += v
	}
	return sum, nil
}
