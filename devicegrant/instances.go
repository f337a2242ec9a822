package devicegrant

import (
	"context"
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// Several instances on one database share their rate limits by dividing
// them: each counts the instances alive (heartbeats in the instances
// table) and enforces its share of every budget (limiter.divide). The
// alternative, every failure counted in the database, would cost a write
// per wrong password or code, the very requests a flood is made of, and a
// serializable conflict between instances on every hot key.
//
// The division is exact only as long as the balancer spreads the requests
// of one key evenly or sends them all to one instance: one that sends a
// key's requests to every instance in turn gets the budget; one that
// keeps an address on one instance (sticky sessions) gives that address
// 1/N of its per-address budget, the price of never giving an attacker
// N times it.

// liveWindow is how many heartbeat intervals an instance counts as alive
// after its last heartbeat: a beat or two may be late without the others
// raising their shares at once.
const liveWindow = 3

// staleInstance is how long after its last heartbeat Cleanup deletes an
// instance's row. It is only tidiness: rows older than the live window are
// not counted.
const staleInstance = time.Hour

// limiters lists every rate limiter, for dividing them.
func (s *Server) limiters() []*limiter {
	return []*limiter{s.codeLimit, s.accountCodes, s.loginLimit, s.accountLimit,
		s.regLimit, s.dcrLimit, s.newClients, s.deviceLimit}
}

// heartbeat tells the database that this instance is alive, at once and
// then every HeartbeatInterval until ctx is done, and divides the rate
// limits among the instances alive. When the database cannot be reached
// the last division stays: an instance on its own does not take the whole
// budget for itself because it lost sight of the others. When ctx is done
// it deletes its row, so that the others (or this server restarted) count
// it no longer; an instance that dies without doing so is counted until
// its heartbeats are liveWindow intervals old, which only makes the
// others stricter meanwhile.
func (s *Server) heartbeat(ctx context.Context) {
	tick := time.NewTicker(s.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		if err := s.beat(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "heartbeat: keeping the last count of instances", "err", err)
		}
		select {
		case <-ctx.Done():
			s.leave(context.WithoutCancel(ctx))
			return
		case <-tick.C:
		}
	}
}

// leave deletes this instance's heartbeat row.
func (s *Server) leave(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.store.Update(ctx, func(tx store.Tx) error {
		return tx.DeleteInstance(ctx, s.instanceID)
	}); err != nil {
		s.log.WarnContext(ctx, "heartbeat: leaving the instances", "err", err)
	}
}

// beat is one heartbeat and count. The count is read outside the write:
// instances that each wrote their row and read all the others' in one
// serializable transaction would abort one another.
func (s *Server) beat(ctx context.Context) error {
	now := s.now()
	if err := s.store.Update(ctx, func(tx store.Tx) error {
		return tx.Heartbeat(ctx, s.instanceID, now)
	}); err != nil {
		return err
	}
	n, err := s.store.LiveInstances(ctx, now.Add(-liveWindow*s.cfg.HeartbeatInterval))
	if err != nil {
		return err
	}
	// This instance is alive whatever the clock said of its own row.
	n = max(n, 1)
	for _, l := range s.limiters() {
		l.divide(n, s.now())
	}
	s.metrics.instances.Set(float64(n))
	return nil
}
