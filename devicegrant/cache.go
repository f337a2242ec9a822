package devicegrant

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"sync"
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// The hot paths are introspection (the homeserver asks about every client
// request it has not cached) and polling (every waiting device, every few
// seconds). Both answer from memory when they can: what they cache is
// forgotten as soon as a transaction that changes it commits (committing),
// so a revoked token is inactive, and an approved grant ready, the moment
// the change's response is sent.
//
// Other instances on the same database learn of a change in two ways. For
// tokens, each answer from memory first reads the token epoch, which the
// changing transaction bumped: one tiny read per introspection, and exact,
// since the epoch moved when the revocation committed, before its response
// was sent. A pushed notice (store.Watcher, PostgreSQL's NOTIFY) could not
// promise that: it is delivered shortly after the commit, not with it, so
// an instance would answer "active" for a moment after the revocation's
// response, which P-REV-1 and P-INT-1 forbid; and a lost listener would
// stretch that moment. So the token cache does not listen. For grants a
// moment is harmless (the device polls again anyway), so polling answers
// from memory with no read at all, and learns of other instances' changes
// by notice (watchOthers) with pollCacheTTL as the bound when notices fail.

const (
	// tokenCacheSize bounds the introspection cache: a slim copy of an
	// access token's rows is about 300 bytes.
	tokenCacheSize = 20000
	// pollCacheSize bounds the polling cache: about 150 bytes a grant.
	pollCacheSize = 20000
)

// accessToken looks an access token up by its hash, from memory when it
// was read before and the token epoch has not moved since: a transaction
// that changes who may use a token, in any process, bumps the epoch, so a
// revoked token is never answered from memory. The epoch is read before
// the token, so what is cached is never older than its stamp. It returns
// the epoch, for putting the token back after a change.
func (s *Server) accessToken(ctx context.Context, hash []byte) (store.AccessToken, int64, error) {
	epoch, err := s.store.TokenEpoch(ctx)
	if err != nil {
		return store.AccessToken{}, 0, err
	}
	if c, ok := s.tokens.get(string(hash)); ok && c.epoch == epoch {
		return c.at, epoch, nil
	}
	at, err := s.store.AccessToken(ctx, hash)
	if err != nil {
		return at, epoch, err
	}
	s.tokens.put(string(hash), cachedToken{slimAccessToken(at), epoch}, s.tokens.begin())
	return at, epoch, nil
}

// cachedToken is an access token as introspection last read it, with the
// token epoch it was read under.
type cachedToken struct {
	at    store.AccessToken
	epoch int64
}

// slimAccessToken keeps what introspection reads, and no hash or password.
func slimAccessToken(at store.AccessToken) store.AccessToken {
	p, ss, u := at.Pair, at.Session, at.User
	return store.AccessToken{
		Pair: store.TokenPair{ID: p.ID, SessionID: p.SessionID, CreatedAt: p.CreatedAt,
			AccessExpiresAt: p.AccessExpiresAt, UsedAt: p.UsedAt, RevokedAt: p.RevokedAt},
		Session: store.Session{ID: ss.ID, UserID: ss.UserID, ClientID: ss.ClientID, DeviceID: ss.DeviceID,
			Scope: ss.Scope, EndedAt: ss.EndedAt},
		User: store.User{ID: u.ID, Username: u.Username, DeactivatedAt: u.DeactivatedAt},
	}
}

// pollView is what a poll needs to know of a grant.
type pollView struct {
	ID        string
	ClientID  string
	State     store.GrantState
	ExpiresAt time.Time
	Interval  time.Duration
	readAt    time.Time
}

// pollCacheTTL bounds how long a grant's state is answered from memory.
// Changes made in this process are heard of at once (committing), and so
// are those of other instances when the store announces them (watchOthers,
// on PostgreSQL). The bound stays when notices flow, as the safety net for
// what they cannot promise: a listener whose connection died without a
// word finds out only at its next check (store/postgres: within about 40
// s); a notice sent while the listener reconnects is lost (the resync then
// drops everything, but only once it is back); and SQLite has no notices
// at all (a second process on its file is an admin command, which changes
// no grant a device is polling). A longer bound with a watcher would save
// one indexed read per waiting device per 10 s, and make each of those
// failures cost a device up to that much longer; it is not worth it.
const pollCacheTTL = 10 * time.Second

// pollState looks a grant up by its device code hash for a poll. ok is
// false when there is no such grant.
func (s *Server) pollState(ctx context.Context, hash []byte) (v pollView, ok bool, err error) {
	key := pollKey(hash)
	if v, ok := s.polls.get(key); ok && s.now().Sub(v.readAt) < pollCacheTTL {
		return v, true, nil
	}
	begun := s.polls.begin()
	// The age counts from before the read: what it returns may be as old
	// as its start, and a slow read must not stretch pollCacheTTL.
	readAt := s.now()
	g, err := s.store.DeviceGrantByDeviceCode(ctx, hash)
	if err != nil {
		return v, false, ignoreNotFound(err)
	}
	v = pollView{ID: g.ID, ClientID: g.ClientID, State: g.State, ExpiresAt: g.ExpiresAt, Interval: g.Interval, readAt: readAt}
	s.polls.put(key, v, begun)
	return v, true, nil
}

// pollKey is what the polling cache files a grant under, and so what a
// change to the grant is announced as to the other instances: a digest of
// its device code hash, 128 bits wide like the row ids, so two grants
// never share one. Announcements are visible to any session of the
// database, including roles that may not read its tables, and the device
// code hash is the key the grant is looked up by; the digest reveals
// neither the code nor the hash. It needs no secret key: whoever can
// compute it holds the device code or the stored hash already, and with
// them more than any notice says. (A grant id would do as well, but a
// poll knows only the device code until it has read the grant.)
func pollKey(deviceCodeHash []byte) string {
	h := sha256.New()
	h.Write([]byte("devicegrant polling cache\x00"))
	h.Write(deviceCodeHash)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}

// topicPolls is the topic under which a transaction announces the grants
// it changed (pollKey), or, with an empty key, that grants were deleted;
// topicClients, the clients it wrote (by id, which is no secret: it is
// sent in the clear with every request of the client), or, with an empty
// key, that clients were deleted.
const (
	topicPolls   = "polls"
	topicClients = "client"
)

// watchOthers makes the polling and client caches forget what other
// instances change, as they announce it (s.others), until ctx is done.
// A notice is read as the changes it announces (the inverse of
// changes.announce) and forgotten as this process's own commits are.
func (s *Server) watchOthers(ctx context.Context) {
	_ = s.others.Watch(ctx, func(n store.Notice) {
		var ch changes
		switch {
		case n.Resync:
			// Notices may have been missed: nothing cached can be trusted
			// beyond what the caches' ages bound.
			ch.grantsDeleted, ch.clientsDeleted = true, true
			if n.Err != nil {
				s.log.WarnContext(ctx, "missed other instances' changes for a while; the polling and client caches start afresh", "err", n.Err)
			}
		case n.Topic == topicPolls && n.Key == "":
			ch.grantsDeleted = true
		case n.Topic == topicPolls:
			ch.grants = []string{n.Key}
		case n.Topic == topicClients && n.Key == "":
			ch.clientsDeleted = true
		case n.Topic == topicClients:
			ch.clients = []string{n.Key}
		}
		s.forgetChanged(ch)
	})
}

func ignoreNotFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// pacer keeps, in memory, when each device last polled and the interval
// it was told (RFC 8628 §3.5). A poll that is answered slow_down or
// authorization_pending writes nothing; after a restart a device's pacing
// starts afresh, which lets it poll early once.
type pacer struct {
	mu    sync.Mutex
	grant map[string]pace
}

type pace struct {
	last     time.Time     // the last poll not answered slow_down
	interval time.Duration // what the device was last told
}

func newPacer() *pacer { return &pacer{grant: make(map[string]pace)} }

// poll records a poll of grantID at now, whose interval starts at base
// and grows by slowDownStep up to ceiling. It returns the interval to tell
// the device when the poll came too early, or 0 when it may go on.
//
// A fifth of the interval is forgiven: clients such as golang.org/x/oauth2
// poll on a ticker, so network and scheduling jitter can bring a poll a
// little early, and answering slow_down to a well-behaved client costs it
// five seconds. The interval is measured from the last poll answered
// without slow_down, so a client that keeps hammering still gets an answer
// once per interval.
func (p *pacer) poll(grantID string, now time.Time, base, ceiling time.Duration) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, seen := p.grant[grantID]
	if !seen {
		cur.interval = base
	}
	if seen && now.Sub(cur.last) < cur.interval-cur.interval/5 {
		cur.interval = max(cur.interval, min(cur.interval+slowDownStep, ceiling))
		p.grant[grantID] = cur
		return cur.interval
	}
	cur.last = now
	p.grant[grantID] = cur
	return 0
}

// forget drops the pacing of grants last polled before cutoff.
func (p *pacer) forget(cutoff time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.grant {
		if c.last.Before(cutoff) {
			delete(p.grant, id)
		}
	}
}
