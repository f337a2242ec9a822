package main

import (
	"fmt"
	"html"
	"net/http"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"time"
)

// pprofHandler serves Go's profiles under /debug/pprof/ on the metrics
// listener (metrics_pprof), in the formats go tool pprof and go tool
// trace read: /debug/pprof/NAME for a named profile (heap, goroutine,
// allocs, block, mutex, threadcreate; ?debug=1 for text, ?gc=1 to
// collect before a heap profile), /debug/pprof/profile?seconds=N for the
// CPU and /debug/pprof/trace?seconds=N for an execution trace.
//
// It is not net/http/pprof because that package's init registers its
// handlers on http.DefaultServeMux in every process that links it, with or
// without metrics_pprof, which left 0.25-0.6 MB more of an idle daemon's
// binary resident (a registration records its caller's file and line).
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/{$}", pprofIndex)
	mux.HandleFunc("GET /debug/pprof/profile", pprofCPU)
	mux.HandleFunc("GET /debug/pprof/trace", pprofTrace)
	mux.HandleFunc("GET /debug/pprof/{name}", pprofNamed)
	return mux
}

// pprofIndex lists what pprofHandler serves.
func pprofIndex(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprint(w, "<!doctype html><title>/debug/pprof/</title><ul>\n")
	for _, p := range pprof.Profiles() {
		name := html.EscapeString(p.Name())
		fmt.Fprintf(w, "<li><a href=\"%s?debug=1\">%s</a> (%d)</li>\n", name, name, p.Count())
	}
	fmt.Fprint(w, "<li><a href=\"profile?seconds=30\">profile</a> (CPU, 30 s)</li>\n<li><a href=\"trace?seconds=1\">trace</a> (1 s)</li>\n</ul>\n")
}

// pprofNamed writes the profile the path names.
func pprofNamed(w http.ResponseWriter, r *http.Request) {
	p := pprof.Lookup(r.PathValue("name"))
	if p == nil {
		http.Error(w, "no such profile", http.StatusNotFound)
		return
	}
	debug, _ := strconv.Atoi(r.FormValue("debug"))
	if gc, _ := strconv.Atoi(r.FormValue("gc")); gc > 0 && p.Name() == "heap" {
		runtime.GC()
	}
	if debug > 0 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="`+p.Name()+`"`)
	}
	if err := p.WriteTo(w, debug); err != nil {
		// The header may be out already; the truncated body says the rest.
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// pprofCPU profiles the CPU for ?seconds (30 when not given).
func pprofCPU(w http.ResponseWriter, r *http.Request) {
	d, ok := pprofSeconds(w, r, 30)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="profile"`)
	if err := pprof.StartCPUProfile(w); err != nil {
		http.Error(w, "cannot profile the CPU: "+err.Error(), http.StatusInternalServerError)
		return
	}
	pprofWait(r, d)
	pprof.StopCPUProfile()
}

// pprofTrace records an execution trace for ?seconds (1 when not given).
func pprofTrace(w http.ResponseWriter, r *http.Request) {
	d, ok := pprofSeconds(w, r, 1)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="trace"`)
	if err := trace.Start(w); err != nil {
		http.Error(w, "cannot trace: "+err.Error(), http.StatusInternalServerError)
		return
	}
	pprofWait(r, d)
	trace.Stop()
}

// pprofSeconds reads ?seconds, a positive number, def when absent; on a
// bad value it answers 400 and returns false.
func pprofSeconds(w http.ResponseWriter, r *http.Request, def float64) (time.Duration, bool) {
	s := def
	if v := r.FormValue("seconds"); v != "" {
		var err error
		if s, err = strconv.ParseFloat(v, 64); err != nil || s <= 0 || s > 3600 {
			http.Error(w, "seconds: a number above 0, at most 3600", http.StatusBadRequest)
			return 0, false
		}
	}
	return time.Duration(s * float64(time.Second)), true
}

// pprofWait waits d, or until the client goes away.
func pprofWait(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}
