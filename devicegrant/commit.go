package devicegrant

import (
	"context"
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// committing wraps the store so that what lives beside the database hears
// of a transaction's changes once it has committed, and never of a
// transaction that rolled back or of an Update run that was rolled back
// and run again: the outbox deliverer is woken when a call was queued, and
// the caches (introspection, polling, clients) forget what the transaction
// changed.
// Because the caches learn of changes from the writes themselves, no rule
// has to remember to invalidate them. Token validity is also recorded in
// the database (the token epoch), so other processes (admin commands,
// other instances) invalidate too; changed grants and clients are
// announced to other instances when the store can (store.Announcer, on
// PostgreSQL), and the polling and client caches bound what they cannot
// hear of by age (cache.go, client.go).
type committing struct {
	store.Store
	s *Server
}

// changes is what one transaction changed that others must hear of.
type changes struct {
	enqueued bool
	tokens   bool     // who may use a token changed: the token epoch was bumped
	grants   []string // pollKey of each grant that changed
	// grantsDeleted: expired grants were deleted (polls of them answer
	// invalid_grant from now on).
	grantsDeleted bool
	clients       []string // the id of each client written
	// clientsDeleted: unused clients were deleted (which ones, the delete
	// does not say).
	clientsDeleted bool
}

func (w committing) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	var ch changes
	err := w.Store.Update(ctx, func(tx store.Tx) error {
		ch = changes{} // only the run that commits counts
		if err := fn(watchingTx{Tx: tx, ch: &ch}); err != nil {
			return err
		}
		ch.announce(tx)
		return nil
	})
	if err == nil {
		w.s.committed(ch)
	}
	return err
}

// announce tells other instances, through tx, what the caches of this one
// are told after the commit. The polling and client caches listen
// (cache.go says why the introspection cache does not).
func (ch changes) announce(tx store.Tx) {
	a, ok := tx.(store.Announcer)
	if !ok {
		return
	}
	if ch.grantsDeleted {
		a.Announce(topicPolls, "")
	} else {
		for _, k := range ch.grants {
			a.Announce(topicPolls, k)
		}
	}
	if ch.clientsDeleted {
		a.Announce(topicClients, "")
	} else {
		for _, id := range ch.clients {
			a.Announce(topicClients, id)
		}
	}
}

// committed tells the caches and the deliverer what a transaction changed.
// (The introspection cache needs no telling: the token epoch, bumped in
// the transaction itself, tells it, and tells other processes too.)
func (s *Server) committed(ch changes) {
	s.forgetChanged(ch)
	if ch.enqueued {
		s.kickOutbox()
	}
}

// forgetChanged makes the polling and client caches forget what ch says
// changed, whether this process committed it or another instance
// announced it (watchOthers).
func (s *Server) forgetChanged(ch changes) {
	for _, h := range ch.grants {
		s.polls.forget(h)
	}
	if ch.grantsDeleted {
		s.polls.forgetAll()
	}
	for _, id := range ch.clients {
		s.clients.forget(id)
	}
	if ch.clientsDeleted {
		s.clients.forgetAll()
	}
}

// watchingTx notes the writes that committing reports.
type watchingTx struct {
	store.Tx
	ch *changes
}

func (t watchingTx) Enqueue(ctx context.Context, e store.OutboxEntry) (int64, error) {
	id, err := t.Tx.Enqueue(ctx, e)
	t.ch.enqueued = t.ch.enqueued || err == nil
	return id, err
}

// tokensChanged bumps the token epoch, once per transaction, when a write
// changed who may use a token.
func (t watchingTx) tokensChanged(ctx context.Context, changed bool) error {
	if !changed || t.ch.tokens {
		return nil
	}
	t.ch.tokens = true
	return t.Tx.BumpTokenEpoch(ctx)
}

func (t watchingTx) UpdateSession(ctx context.Context, sess store.Session) error {
	if err := t.Tx.UpdateSession(ctx, sess); err != nil {
		return err
	}
	return t.tokensChanged(ctx, !sess.EndedAt.IsZero())
}

func (t watchingTx) UpdateTokenPair(ctx context.Context, p store.TokenPair) error {
	if err := t.Tx.UpdateTokenPair(ctx, p); err != nil {
		return err
	}
	return t.tokensChanged(ctx, !p.RevokedAt.IsZero())
}

func (t watchingTx) UpdateUser(ctx context.Context, u store.User) error {
	if err := t.Tx.UpdateUser(ctx, u); err != nil {
		return err
	}
	return t.tokensChanged(ctx, !u.DeactivatedAt.IsZero())
}

func (t watchingTx) DeleteSpentTokens(ctx context.Context, before time.Time) (int64, error) {
	n, err := t.Tx.DeleteSpentTokens(ctx, before)
	if err != nil {
		return n, err
	}
	return n, t.tokensChanged(ctx, n > 0)
}

func (t watchingTx) DeleteExpired(ctx context.Context, before time.Time) (int64, error) {
	n, err := t.Tx.DeleteExpired(ctx, before)
	t.ch.grantsDeleted = t.ch.grantsDeleted || n > 0
	return n, err
}

func (t watchingTx) UpdateDeviceGrant(ctx context.Context, g store.DeviceGrant) error {
	t.ch.grants = append(t.ch.grants, pollKey(g.DeviceCodeHash))
	return t.Tx.UpdateDeviceGrant(ctx, g)
}

// A client's trust, or its CreatedAt (a shared public client registered
// again, P-DCR-6), changed; CreateClient makes a row no cache has, but an
// id is forgotten anyway, so that no cache ever has to rely on that.
func (t watchingTx) UpdateClient(ctx context.Context, c store.Client) error {
	t.ch.clients = append(t.ch.clients, c.ID)
	return t.Tx.UpdateClient(ctx, c)
}

func (t watchingTx) CreateClient(ctx context.Context, c store.Client) error {
	t.ch.clients = append(t.ch.clients, c.ID)
	return t.Tx.CreateClient(ctx, c)
}

func (t watchingTx) DeleteUnusedClients(ctx context.Context, before time.Time) (int64, error) {
	n, err := t.Tx.DeleteUnusedClients(ctx, before)
	t.ch.clientsDeleted = t.ch.clientsDeleted || n > 0
	return n, err
}
