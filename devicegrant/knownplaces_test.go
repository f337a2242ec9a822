package devicegrant_test

import (
	"context"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// placeReads counts the store's known-place reads.
type placeReads struct {
	store.Store
	n *atomic.Int64
}

func (p placeReads) KnownPlace(ctx context.Context, userID, place string) (time.Time, error) {
	p.n.Add(1)
	return p.Store.KnownPlace(ctx, userID, place)
}

// TestKnownPlaceNoTimingOracle: a wrong password for an account that
// exists and one for a name nobody holds do the same work, including the
// database read of where the account signed in from (issue 15 moved it
// from memory to the database, a round trip that only existing accounts
// would otherwise pay, telling a stranger which names are accounts, which
// the dummy hash exists to hide).
func TestKnownPlaceNoTimingOracle(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "places.db"))
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int64
	// Not newEnv: DEVICEGRANT_CORE_STORE=postgres would replace the store.
	e := &env{Server: devtest.Start(t, devtest.WithRerunUpdates(nil), devtest.WithStore(placeReads{Store: st, n: &reads})), t: t}
	for _, user := range []string{testUser, "nobody-here"} {
		before := reads.Load()
		status, m := e.legacyLogin(`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"` + user + `"},"password":"wrong password"}`)
		if status != http.StatusForbidden {
			t.Fatalf("wrong password for %q: %d %v", user, status, m)
		}
		if got := reads.Load() - before; got != 1 {
			t.Errorf("a wrong password for %q read the known places %d times; every try must read them once, account or not", user, got)
		}
	}
}
