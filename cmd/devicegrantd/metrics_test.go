package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestMetricsListener: metrics_listen serves Prometheus /metrics, and Go's
// profiles (pprofHandler) only when metrics_pprof is on.
func TestMetricsListener(t *testing.T) {
	for _, pprofOn := range []bool{false, true} {
		dir := t.TempDir()
		metrics := freeAddr(t)
		vars := map[string]string{
			"DEVICEGRANTD_LISTEN":         freeAddr(t),
			"DEVICEGRANTD_DATABASE":       filepath.Join(dir, "devicegrantd.db"),
			"DEVICEGRANTD_METRICS_LISTEN": metrics,
			"DEVICEGRANTD_LOG_LEVEL":      "warn",
		}
		if pprofOn {
			vars["DEVICEGRANTD_METRICS_PPROF"] = "true"
		}
		startDaemon(t, vars)
		get := func(path string) (int, string) {
			t.Helper()
			resp, err := http.Get("http://" + metrics + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if status, body := get("/metrics"); status != http.StatusOK || !strings.Contains(body, "devicegrant_") {
			t.Errorf("pprof %v: /metrics answered %d without devicegrant metrics", pprofOn, status)
		}
		status, _ := get("/debug/pprof/")
		if want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[pprofOn]; status != want {
			t.Errorf("metrics_pprof %v: /debug/pprof/ answered %d, want %d", pprofOn, status, want)
		}
		if !pprofOn {
			if status, _ := get("/debug/pprof/heap"); status != http.StatusNotFound {
				t.Errorf("metrics_pprof off: /debug/pprof/heap answered %d", status)
			}
			continue
		}
		// What go tool pprof and go tool trace fetch: gzipped protocol
		// buffers for profiles, a trace that starts with its header.
		for path, prefix := range map[string]string{
			"/debug/pprof/heap?gc=1":           "\x1f\x8b",
			"/debug/pprof/allocs":              "\x1f\x8b",
			"/debug/pprof/goroutine?debug=1":   "goroutine profile: total ",
			"/debug/pprof/profile?seconds=0.2": "\x1f\x8b",
			"/debug/pprof/trace?seconds=0.1":   "go 1.",
		} {
			if status, body := get(path); status != http.StatusOK || !strings.HasPrefix(body, prefix) {
				t.Errorf("%s answered %d, %.40q, want 200 and %q first", path, status, body, prefix)
			}
		}
		for path, want := range map[string]int{
			"/debug/pprof/nosuch":              http.StatusNotFound,
			"/debug/pprof/profile?seconds=abc": http.StatusBadRequest,
			"/debug/pprof/trace?seconds=-1":    http.StatusBadRequest,
		} {
			if status, _ := get(path); status != want {
				t.Errorf("%s answered %d, want %d", path, status, want)
			}
		}
	}
}
