package main

import (
	"fmt"
	"net"
	"strings"
)

// notifier speaks systemd's readiness protocol (sd_notify(3)) for a unit of
// Type=notify: one datagram of newline-separated VAR=value assignments to
// the unix socket named by $NOTIFY_SOCKET. It is small enough that a
// dependency on libsystemd or a binding buys nothing.
type notifier struct {
	addr *net.UnixAddr
}

// newNotifier returns nil when $NOTIFY_SOCKET is unset (not started by
// systemd, or not Type=notify): notify is then a no-op.
func newNotifier(getenv func(string) string) (*notifier, error) {
	name := getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil, nil
	}
	// An absolute path, or an abstract socket written with a leading '@',
	// which Go's net package turns into the leading NUL byte Linux wants.
	if !strings.HasPrefix(name, "/") && !strings.HasPrefix(name, "@") {
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: want an absolute path or an abstract name starting with @", name)
	}
	return &notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}, nil
}

// notify sends state, e.g. "READY=1" or "STOPPING=1".
func (n *notifier) notify(state string) error {
	if n == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
