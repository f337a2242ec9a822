package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestMetricsListener: metrics_listen serves Prometheus /metrics, and Go's
// profiler only when metrics_pprof is on.
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
	}
}
