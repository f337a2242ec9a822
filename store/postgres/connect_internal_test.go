package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// Open, and so serve, migrate and every admin command, gives up on a
// server that never answers within connectTimeout when the URL sets no
// connect_timeout, instead of waiting for TCP to give up; a URL's own
// connect_timeout still rules.
func TestConnectToASilentServerEnds(t *testing.T) {
	t.Parallel()
	addr := pgtest.SilentServer(t)
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
