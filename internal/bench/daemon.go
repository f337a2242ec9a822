package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// process is a server the harness started: devicegrantd or the bare
// handler.
type process struct {
	cmd   *exec.Cmd
	base  string // http://127.0.0.1:PORT/
	ready time.Duration
	log   *os.File
}

// freeAddr returns a loopback address nobody listens on.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// start runs bin with args and env, its output going to logPath, and
// waits for GET /healthz to answer 200. ready is measured from the start
// of the process.
func start(ctx context.Context, bin string, args, env []string, addr, logPath string) (*process, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, base: "http://" + addr + "/", log: log}
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(p.base + "healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				p.ready = time.Since(t0)
				return p, nil
			}
		}
		if time.Since(t0) > 30*time.Second || ctx.Err() != nil {
			p.stop()
			return nil, fmt.Errorf("%s never became ready (see %s)", bin, logPath)
		}
		time.Sleep(time.Millisecond)
	}
}

// stop ends the process with SIGTERM, then SIGKILL after five seconds.
func (p *process) stop() {
	if p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.log.Close()
}

// rss returns a size from the process's /proc status (Linux): VmRSS, the
// resident set now, VmHWM, its peak, or RssAnon, its anonymous part.
func (p *process) rss(field string) (int64, error) {
	return p.procSize("status", field)
}

// procSize returns the size field of the process's /proc file name
// (status or smaps_rollup), in bytes.
func (p *process) procSize(name, field string) (int64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), name))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no " + field + " in /proc " + name)
}

// buildDaemon builds cmd/devicegrantd of the module in dir into out, as
// README.md says to build it: with gin's nomsgpack tag, which leaves out
// a MessagePack codec the daemon never uses (about 6 MB of the mapped
// binary, and the pages of it that its package initializers touch).
func buildDaemon(ctx context.Context, dir, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "nomsgpack", "-o", out, "./cmd/devicegrantd")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -tags nomsgpack ./cmd/devicegrantd: %w\n%s", err, b)
	}
	return nil
}

// moduleRoot finds the directory of the go.mod above the working directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the harness inside the devicegrant module")
	}
	return filepath.Dir(mod), nil
}

// execCommand runs bin with args and env added, stdin given.
func execCommand(ctx context.Context, bin string, args, env []string, stdin string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}
