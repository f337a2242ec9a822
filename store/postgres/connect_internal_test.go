package postgres

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// silentServer accepts TCP connections and never says a word, as a hung
// PostgreSQL or half of a failover does, and returns its address.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}

// Open, and so serve, migrate and every admin command, gives up on a
// server that never answers within connectTimeout when the URL sets no
// connect_timeout, instead of waiting for TCP to give up; a URL's own
// connect_timeout still rules.
func TestConnectToASilentServerEnds(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	for _, c := range []struct {
		query string
		want  time.Duration
	}{
		{"", connectTimeout},
		{"&connect_timeout=1", time.Second},
	} {
		start := time.Now()
		_, err := Open(context.Background(), "postgres://nobody@"+addr+"/none?sslmode=disable"+c.query)
		took := time.Since(start)
		if err == nil {
			t.Fatalf("Open%s of a silent server succeeded", c.query)
		}
		if took < c.want/2 || took > c.want+5*time.Second {
			t.Errorf("Open%s of a silent server gave up after %v, want about %v: %v", c.query, took.Round(time.Millisecond), c.want, err)
		}
	}
}
