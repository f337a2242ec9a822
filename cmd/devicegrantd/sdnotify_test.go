package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// fakeSystemd listens where $NOTIFY_SOCKET points, as systemd does for a
// Type=notify unit, and hands over each datagram.
func fakeSystemd(t *testing.T, name string) <-chan string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on %s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

func nextMessage(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(15 * time.Second):
		t.Fatalf("no %s message on NOTIFY_SOCKET", what)
		return ""
	}
}

// TestSdNotify: under systemd (Type=notify) the daemon says READY=1 once
// it serves, and STOPPING=1 on SIGTERM before it drains; both for a
// socket path and for an abstract socket name ('@').
func TestSdNotify(t *testing.T) {
	names := map[string]string{
		"path":     filepath.Join(t.TempDir(), "notify"),
		"abstract": fmt.Sprintf("@devicegrantd-test-%d-%d", os.Getpid(), time.Now().UnixNano()),
	}
	for kind, name := range names {
		t.Run(kind, func(t *testing.T) {
			msgs := fakeSystemd(t, name)
			vars := map[string]string{
				"DEVICEGRANTD_LISTEN":    freeAddr(t),
				"DEVICEGRANTD_DATABASE":  filepath.Join(t.TempDir(), "d.db"),
				"DEVICEGRANTD_LOG_LEVEL": "warn",
				"NOTIFY_SOCKET":          name,
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var log devtest.SyncBuffer
			done := make(chan error, 1)
			go func() { done <- run(ctx, nil, strings.NewReader(""), &log, &log, env(vars)) }()

			ready := nextMessage(t, msgs, "READY")
			if !strings.Contains("\n"+ready+"\n", "\nREADY=1\n") {
				t.Fatalf("first message %q, want READY=1", ready)
			}
			// Ready means serving: the first request after it succeeds.
			resp, err := http.Get("http://" + vars["DEVICEGRANTD_LISTEN"] + "/healthz")
			if err != nil {
				t.Fatalf("healthz right after READY=1: %v", err)
			}
			resp.Body.Close()

			cancel()
			if m := nextMessage(t, msgs, "STOPPING"); m != "STOPPING=1" {
				t.Errorf("message after SIGTERM %q, want STOPPING=1", m)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v\n%s", err, log.String())
				}
			case <-time.After(15 * time.Second):
				t.Fatal("serve did not stop")
			}
		})
	}
}

// TestSdNotifyRejectsRelativeSocket: a NOTIFY_SOCKET that is neither a
// path nor an abstract name is a configuration error, said at start.
func TestSdNotifyRejectsRelativeSocket(t *testing.T) {
	if _, err := newNotifier(env(map[string]string{"NOTIFY_SOCKET": "notify"})); err == nil {
		t.Error("a relative NOTIFY_SOCKET was accepted")
	}
	n, err := newNotifier(env(nil))
	if err != nil || n != nil {
		t.Errorf("without NOTIFY_SOCKET: %v %v", n, err)
	}
	if err := n.notify("READY=1"); err != nil {
		t.Errorf("notify without a socket: %v", err)
	}
}

// TestGracefulShutdown: SIGTERM while a request is in flight and a
// homeserver call hangs. The request is answered, serve returns cleanly,
// and the outbox entry is released (no lease, no attempt counted), so the
// next start delivers it at once instead of a minute later.
func TestGracefulShutdown(t *testing.T) {
	called := make(chan struct{}, 1)
	hang := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case called <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	}), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hang.Serve(ln)
	defer hang.Close()

	dir := t.TempDir()
	vars := map[string]string{
		"DEVICEGRANTD_LISTEN":              freeAddr(t),
		"DEVICEGRANTD_DATABASE":            filepath.Join(dir, "d.db"),
		"DEVICEGRANTD_LOG_LEVEL":           "warn",
		"DEVICEGRANTD_HOMESERVER_ENDPOINT": "http://" + ln.Addr().String() + "/",
		"DEVICEGRANTD_HOMESERVER_SECRET":   "s",
	}
	addAlice(t, vars) // queues provision_user
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log devtest.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, strings.NewReader(""), &log, &log, env(vars)) }()
	select {
	case <-called:
	case <-time.After(15 * time.Second):
		t.Fatalf("the daemon never called the homeserver\n%s", log.String())
	}

	// A request in flight when the signal comes: its body is only half
	// sent. The rest goes once the listener is closed, and it must still
	// be answered.
	addr := vars["DEVICEGRANTD_LISTEN"]
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := "username=alice&password=wrong+password"
	fmt.Fprintf(conn, "POST /login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		addr, len(body), body[:10])
	time.Sleep(50 * time.Millisecond) // let the server read the headers
	cancel()
	waitFor(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if _, err := conn.Write([]byte(body[10:])); err != nil {
		t.Fatalf("finishing the request in flight: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 ") {
		t.Errorf("the request in flight at SIGTERM got %q, %v; want an answer", status, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v\n%s", err, log.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}

	st, err := sqlite.Open(context.Background(), vars["DEVICEGRANTD_DATABASE"])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	entries, err := st.Outbox(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("the outbox entry is gone")
	}
	for _, e := range entries {
		if !e.LeaseUntil.IsZero() {
			t.Errorf("%s still leased until %v after shutdown", e.Call, e.LeaseUntil)
		}
		if e.Attempts != 0 {
			t.Errorf("%s: the interrupted call counted as attempt %d", e.Call, e.Attempts)
		}
	}
}
