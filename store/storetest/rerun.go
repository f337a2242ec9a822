package storetest

import (
	"context"
	"errors"
	"fmt"

	"github.com/devicegrant/devicegrant/store"
)

// errFirstRun rolls back the first run of a function given to a Rerun
// store's Update.
var errFirstRun = errors.New("storetest: first run of a rerun update, rolled back")

// Between runs between the two runs of every Update of a [Rerun] store, in
// no transaction, with the wrapped store: what another writer may do
// before a backend retries. A test uses it to change what the second run
// sees; an error it returns fails the Update.
type Between func(ctx context.Context, st store.Store) error

// Rerun returns st with an Update that runs fn twice, as a backend that
// retries serialization failures may (store.Store allows it): first in a
// transaction that is rolled back whatever fn returns, then in one that
// commits when fn returns nil, whose result Update returns. A function
// that carries a decision from one run to the next, or acts outside its
// transaction, then misbehaves on SQLite too, where it would otherwise
// only misbehave under a retrying backend's contention. between may be
// nil.
//
// The wrapper keeps the optional store.Watcher of st, if it has one, so
// that a server on it still hears and heeds other processes.
func Rerun(st store.Store, between Between) store.Store {
	r := &rerun{Store: st, between: between}
	if w, ok := st.(store.Watcher); ok {
		return rerunWatcher{r, w}
	}
	return r
}

// rerunWatcher is a rerun of a store that is also a store.Watcher.
type rerunWatcher struct {
	*rerun
	store.Watcher
}

type rerun struct {
	store.Store
	between Between
}

func (r *rerun) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	err := r.Store.Update(ctx, func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errFirstRun
	})
	if err != nil && ctx.Err() != nil {
		return err
	}
	if r.between != nil {
		if err := r.between(ctx, r.Store); err != nil {
			return fmt.Errorf("storetest: between the runs of an update: %w", err)
		}
	}
	return r.Store.Update(ctx, fn)
}
