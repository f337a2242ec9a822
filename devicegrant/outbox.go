package devicegrant

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// parkAfter is how many permanent (4xx) failures park an entry: it then
// stops holding up the user's later calls and waits for an operator
// ("devicegrantd outbox retry"). Transport errors and 5xx never park: an
// outage only delays.
const parkAfter = 20

// maxLastError bounds the error kept with an outbox entry: room for the
// call, the status line and the 512 bytes of the homeserver's answer that
// call reads.
const maxLastError = 1024

// lapseEvery is how often the deliverer looks for approvals that expired
// unredeemed (see endLapsedApprovals).
const lapseEvery = 30 * time.Second

// deliverOutbox runs until ctx is done, making due calls in order per user,
// and queueing the deletes that approvals left behind when they lapse.
func (s *Server) deliverOutbox(ctx context.Context) {
	tick := min(time.Second, s.cfg.OutboxBackoff.Min)
	t := time.NewTicker(tick)
	defer t.Stop()
	// At start, look back over everything cleanup has not purged yet: the
	// process may have been down when those approvals lapsed, and a
	// delete_device sent twice does no harm.
	// Of several instances on one database, the one holding the sweep's
	// lease looks (jobs.go).
	swept := s.now().Add(-25 * time.Hour)
	var nextSweep time.Time
	for {
		if now := s.now(); !now.Before(nextSweep) {
			swept = s.sweepLapsed(ctx, swept, now)
			nextSweep = now.Add(lapseEvery)
		}
		for s.deliverDue(ctx) {
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.outboxKick:
		}
	}
}

// deliverDue makes one pass over the due heads and reports whether it
// delivered anything (so the caller looks again at once).
func (s *Server) deliverDue(ctx context.Context) bool {
	due, err := s.store.OutboxDue(ctx, s.now(), 100)
	if err != nil {
		if ctx.Err() == nil {
			s.log.ErrorContext(ctx, "outbox: read", "err", err)
		}
		return false
	}
	delivered := false
	for _, e := range due {
		ok, err := s.deliver(ctx, e)
		if err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "outbox: record delivery", "id", e.ID, "err", err)
		}
		delivered = delivered || ok
	}
	return delivered
}

// deliver claims e, makes the call and records the outcome. Every function
// given to Update here sets what it decides afresh on each run: the store
// may run it again, and a second run may find that another deliverer took
// or finished the entry in between.
func (s *Server) deliver(ctx context.Context, e store.OutboxEntry) (bool, error) {
	var claim *store.OutboxEntry // the leased entry, if this call holds it
	err := s.store.Update(ctx, func(tx store.Tx) error {
		claim = nil
		cur, err := tx.OutboxEntry(ctx, e.ID)
		if errors.Is(err, store.ErrNotFound) {
			return nil // another deliverer finished it
		}
		if err != nil {
			return err
		}
		// Read afresh: since OutboxDue, another deliverer may have taken
		// the entry, or tried it and failed, setting when it may be tried
		// again; and an operator may have put an older parked entry of the
		// same user back in line, which must go first.
		now := s.now()
		if !cur.ParkedAt.IsZero() || cur.LeaseUntil.After(now) || cur.NextAttemptAt.After(now) {
			return nil
		}
		head, err := tx.OutboxHead(ctx, cur.UserKey)
		if err != nil {
			return err
		}
		if head.ID != cur.ID {
			return nil
		}
		cur.LeaseUntil = now.Add(s.cfg.OutboxLease)
		if err := tx.UpdateOutbox(ctx, cur); err != nil {
			return err
		}
		claim = &cur
		return nil
	})
	if err != nil || claim == nil {
		return false, err
	}
	e = *claim

	// The call ends well within the lease, which another instance waits
	// out before making it again: one instance at a time makes a call.
	callCtx, cancelCall := context.WithTimeout(ctx, s.cfg.OutboxLease/2)
	callErr := s.callHomeserver(callCtx, e.Call, e.Body)
	cancelCall()
	stopping := ctx.Err() != nil
	// The outcome is recorded even when ctx ended during the call (the
	// daemon is stopping): otherwise the lease would hold the user's calls
	// back for a minute after the next start.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if callErr != nil && stopping {
		return false, s.releaseLease(ctx, e)
	}
	if callErr == nil {
		tookOver := false
		err = s.store.Update(ctx, func(tx store.Tx) error {
			tookOver = false
			cur, err := tx.OutboxEntry(ctx, e.ID)
			if errors.Is(err, store.ErrNotFound) {
				return nil // another deliverer made the call again, and recorded it
			}
			if err != nil {
				return err
			}
			if !leaseHeld(cur, e) {
				// Another deliverer is making the call again: the entry is
				// its to delete once that call has ended, not before, so
				// that the user's next call cannot overtake it.
				tookOver = true
				return nil
			}
			if err := tx.DeleteOutbox(ctx, e.ID); err != nil {
				return err
			}
			if e.ApprovalID == "" {
				return nil
			}
			// The device exists now: the device grant or authorization
			// code that waited for it may go on.
			g, err := tx.DeviceGrant(ctx, e.ApprovalID)
			if err == nil && grantDeviceCreated(&g) {
				return tx.UpdateDeviceGrant(ctx, g)
			}
			if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			a, err := tx.AuthCode(ctx, e.ApprovalID)
			if err == nil && authCodeDeviceCreated(&a) {
				return tx.UpdateAuthCode(ctx, a)
			}
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		})
		if err == nil && tookOver {
			s.log.WarnContext(ctx, "outbox: delivered, but recorded only after the lease ran out; another instance makes the call again",
				"call", e.Call, "user", e.UserKey)
			return false, nil
		}
		if err == nil {
			s.metrics.delivered.WithLabelValues(e.Call).Inc()
			s.log.DebugContext(ctx, "outbox: delivered", "call", e.Call, "user", e.UserKey, "attempts", e.Attempts+1)
		}
		return err == nil, err
	}

	s.metrics.failures.WithLabelValues(e.Call).Inc()
	var he *homeserverError
	permanent := errors.As(callErr, &he) && he.permanent
	var failed store.OutboxEntry // the entry as recorded; zero if not this deliverer's to record
	err = s.store.Update(ctx, func(tx store.Tx) error {
		failed = store.OutboxEntry{}
		cur, err := tx.OutboxEntry(ctx, e.ID)
		if errors.Is(err, store.ErrNotFound) {
			return nil // another deliverer made the call again, and it went through
		}
		if err != nil {
			return err
		}
		if !leaseHeld(cur, e) {
			// Recorded only after the lease ran out, and another deliverer
			// took the call over: clearing its lease would let a third
			// make the call beside it.
			return nil
		}
		now := s.now()
		cur.Attempts++
		// The error quotes the homeserver's answer, in whatever encoding
		// it came: an outcome the store refused would never count, and
		// the call would never park.
		cur.LastError = storableText(callErr.Error(), maxLastError)
		cur.LeaseUntil = time.Time{}
		cur.NextAttemptAt = now.Add(s.backoff(cur.Attempts))
		if permanent && cur.Attempts >= parkAfter {
			cur.ParkedAt = now
		}
		failed = cur
		return tx.UpdateOutbox(ctx, cur)
	})
	if err != nil {
		return false, err
	}
	// Counted and logged once the outcome is committed, so a re-run of
	// the Update function counts and logs nothing twice.
	if failed.ID == 0 {
		s.log.WarnContext(ctx, "outbox: call failed, and the lease ran out before that was recorded; another instance has the call",
			"call", e.Call, "user", e.UserKey, "err", callErr)
		return false, nil
	}
	if !failed.ParkedAt.IsZero() {
		s.metrics.parked.WithLabelValues(failed.Call).Inc()
		s.log.ErrorContext(ctx, "outbox: call parked after repeated refusals; run devicegrantd outbox",
			"call", failed.Call, "user", failed.UserKey, "attempts", failed.Attempts, "err", callErr)
	} else {
		s.log.WarnContext(ctx, "outbox: call failed; will retry", "call", failed.Call, "user", failed.UserKey,
			"attempts", failed.Attempts, "retry_in", failed.NextAttemptAt.Sub(s.now()).Round(time.Millisecond), "err", callErr)
	}
	return false, nil
}

// releaseLease gives up the lease on claim, an entry whose call was cut
// short by shutdown, without counting it as an attempt; unless the lease
// ran out and another deliverer holds the entry now.
func (s *Server) releaseLease(ctx context.Context, claim store.OutboxEntry) error {
	return s.store.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.OutboxEntry(ctx, claim.ID)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil || !leaseHeld(cur, claim) {
			return err
		}
		cur.LeaseUntil = time.Time{}
		return tx.UpdateOutbox(ctx, cur)
	})
}

// leaseHeld tells whether cur, an outbox entry as read now, is still
// under the lease that claim took. Each claim sets the lease to its own
// time (to the millisecond the stores keep), so once another deliverer has
// taken the entry over, after the lease ran out, it differs. An outcome
// recorded that late (a slow database, a clock ahead elsewhere) is no
// longer this deliverer's to record.
func leaseHeld(cur, claim store.OutboxEntry) bool {
	return cur.LeaseUntil.UnixMilli() == claim.LeaseUntil.UnixMilli()
}

// backoff doubles from the minimum to the maximum.
func (s *Server) backoff(attempts int) time.Duration {
	d := s.cfg.OutboxBackoff.Min
	for i := 1; i < attempts && d < s.cfg.OutboxBackoff.Max; i++ {
		d *= 2
	}
	return min(d, s.cfg.OutboxBackoff.Max)
}

// RetryParked puts every parked outbox entry back in line and returns how
// many there were.
func (s *Server) RetryParked(ctx context.Context) (int, error) {
	n := 0
	err := s.store.Update(ctx, func(tx store.Tx) error {
		n = 0
		all, err := tx.Outbox(ctx, 1_000_000)
		if err != nil {
			return err
		}
		now := s.now()
		for _, e := range all {
			if e.ParkedAt.IsZero() {
				continue
			}
			e.ParkedAt, e.Attempts, e.NextAttemptAt = time.Time{}, 0, now
			if err := tx.UpdateOutbox(ctx, e); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("devicegrant: retry parked: %w", err)
	}
	return n, nil
}

// Outbox lists the calls waiting for the homeserver, oldest first.
func (s *Server) Outbox(ctx context.Context, limit int) ([]store.OutboxEntry, error) {
	return s.store.Outbox(ctx, limit)
}

// endLapsedApprovals queues delete_device for the Matrix devices of
// approvals that expired unredeemed in (after, before], unless something
// else still uses the device. An approval creates its device before the
// client redeems it (P-HS-3), and while it waits, ending another session on
// the same device id leaves the device alone (endSession); so when the
// approval lapses instead of becoming a session, nothing else would remove
// the device until the next sync_devices.
func (s *Server) endLapsedApprovals(ctx context.Context, after, before time.Time) error {
	grants, err := s.store.GrantsLapsed(ctx, grantStatesHoldingDevice(), after, before)
	if err != nil {
		return err
	}
	codes, err := s.store.AuthCodesLapsed(ctx, authCodeStatusesHoldingDevice(), after, before)
	if err != nil {
		return err
	}
	type device struct{ userID, deviceID string }
	var devices []device
	seen := map[device]bool{}
	add := func(userID, scope string) {
		sc, err := parseScopes(scope)
		if err != nil || sc.deviceID == "" || userID == "" {
			return
		}
		d := device{userID, sc.deviceID}
		if !seen[d] {
			seen[d] = true
			devices = append(devices, d)
		}
	}
	for _, g := range grants {
		add(g.UserID, g.Scope)
	}
	for _, a := range codes {
		add(a.UserID, a.Scope)
	}
	for _, d := range devices {
		err := s.store.Update(ctx, func(tx store.Tx) error {
			inUse, err := s.deviceInUse(ctx, tx, d.userID, d.deviceID, s.now())
			if err != nil || inUse {
				return err
			}
			user, err := tx.User(ctx, d.userID)
			if err != nil || !user.DeactivatedAt.IsZero() { // delete_user took every device
				return err
			}
			return s.enqueue(ctx, tx, user.Username, callDeleteDevice, deviceBody{Localpart: user.Username, DeviceID: d.deviceID}, "")
		})
		if err != nil {
			return fmt.Errorf("device %s of a lapsed approval: %w", d.deviceID, err)
		}
	}
	return nil
}
