package devicegrant

import (
	"context"
	"fmt"
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// The background jobs that the instances sharing one database take turns
// at (issue 15), each under a lease in the store named after it: cleanup,
// the periodic sync_devices, and the sweep for lapsed approvals. The
// instance whose transaction takes a job's lease does the job; the others
// skip it. A lease is held for the job's period and renewed by its holder
// each time it runs the job again, so one instance keeps a job while it
// lives, and another takes over at most a period after it is gone.
// Leases are a few rows, one per job, overwritten in place: nothing needs
// to delete them.
//
// The outbox itself needs no such lease: each entry carries its own.
const (
	jobCleanup = "cleanup"
	jobSync    = "sync_devices"
	jobLapsed  = "lapsed_approvals"
)

// The outcomes devicegrant_jobs_total counts.
const (
	outcomeRan           = "ran"
	outcomeHeldElsewhere = "held_elsewhere"
)

// cleanupEvery is how often Run deletes long-expired rows.
const cleanupEvery = 10 * time.Minute

// takeLease takes the named job's lease for this instance for d from now
// and reports whether it did.
func (s *Server) takeLease(ctx context.Context, job string, d time.Duration) (bool, error) {
	if s.others == nil {
		return true, nil
	}
	var got bool
	err := s.store.Update(ctx, func(tx store.Tx) error {
		now := s.now()
		var err error
		got, err = tx.TakeLease(ctx, job, s.instanceID, now, now.Add(d))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("devicegrant: lease on %s: %w", job, err)
	}
	return got, nil
}

// syncDevicesOnce runs SyncDevices if no other instance did within the
// last SyncInterval, so that the whole fleet queues sync_devices for each
// user once per interval, and an instance starting beside others that
// synced lately does not queue it again.
func (s *Server) syncDevicesOnce(ctx context.Context, provisionUsers bool) {
	got, err := s.takeLease(ctx, jobSync, s.cfg.SyncInterval)
	if err != nil {
		if ctx.Err() == nil {
			s.log.ErrorContext(ctx, "sync devices", "err", err)
		}
		return
	}
	if !got {
		s.metrics.jobs.WithLabelValues(jobSync, outcomeHeldElsewhere).Inc()
		s.log.DebugContext(ctx, "sync devices: another instance synced within the interval")
		return
	}
	s.metrics.jobs.WithLabelValues(jobSync, outcomeRan).Inc()
	if err := s.SyncDevices(ctx, provisionUsers); err != nil && ctx.Err() == nil {
		s.log.ErrorContext(ctx, "sync devices", "err", err)
	}
}

// cleanupOnce runs the cleanup if this instance holds, or takes, the
// cleanup lease: the lease is taken in the cleanup's own transaction, so
// a cleanup that fails leaves it to whoever tries next.
func (s *Server) cleanupOnce(ctx context.Context) {
	n, did, err := s.cleanup(ctx, true)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			s.log.ErrorContext(ctx, "cleanup", "err", err)
		}
	case did:
		s.metrics.jobs.WithLabelValues(jobCleanup, outcomeRan).Inc()
		if n > 0 {
			s.log.DebugContext(ctx, "cleanup", "deleted", n)
		}
	default:
		s.metrics.jobs.WithLabelValues(jobCleanup, outcomeHeldElsewhere).Inc()
	}
}

// lapseLease is how long the sweep for lapsed approvals is leased: two of
// its periods, so that its holder renews it in time.
const lapseLease = 2 * lapseEvery

// sweepLapsed looks for approvals that lapsed in (swept, now] if this
// instance holds the sweep's lease, and returns how far it has looked.
func (s *Server) sweepLapsed(ctx context.Context, swept, now time.Time) time.Time {
	got, err := s.takeLease(ctx, jobLapsed, lapseLease)
	if err != nil {
		if ctx.Err() == nil {
			s.log.ErrorContext(ctx, "outbox: lapsed approvals", "err", err)
		}
		return swept
	}
	if !got {
		s.metrics.jobs.WithLabelValues(jobLapsed, outcomeHeldElsewhere).Inc()
		// Another instance holds the lease, so it swept up to a moment
		// less than a lease ago. Should this one take over, it looks back
		// that far (and a period more, for the time between reading the
		// clock and taking the lease): a delete_device queued twice does
		// no harm, one never queued leaves a device behind until the
		// next sync_devices.
		if from := now.Add(-lapseLease - lapseEvery); from.After(swept) {
			return from
		}
		return swept
	}
	s.metrics.jobs.WithLabelValues(jobLapsed, outcomeRan).Inc()
	if err := s.endLapsedApprovals(ctx, swept, now); err != nil {
		if ctx.Err() == nil {
			s.log.ErrorContext(ctx, "outbox: lapsed approvals", "err", err)
		}
		return swept
	}
	return now
}
