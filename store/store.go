// Package store defines how devicegrant persists its state, independent of
// any database. Backends (SQLite in store/sqlite, PostgreSQL in
// store/postgres) implement Store and must pass the conformance suite in
// store/storetest.
//
// The store holds data, not rules: every protocol decision (is this grant
// approved, is this refresh token reused) is made by package devicegrant,
// inside a transaction that Store.Update provides. Secrets never reach the
// store in clear: tokens, codes and client secrets arrive already hashed.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors every backend returns, so callers can test with errors.Is.
var (
	// ErrNotFound means no row matched the lookup.
	ErrNotFound = errors.New("store: not found")
	// ErrAlreadyExists means a unique key (username, client id, live user
	// code, token hash) is already taken.
	ErrAlreadyExists = errors.New("store: already exists")
)

// User is a local account. Username is the Matrix localpart.
type User struct {
	ID           string // stable and never reused; the OpenID "sub"
	Username     string // Matrix localpart; never reused, even after deactivation
	PasswordHash string // PHC-formatted argon2id hash
	DisplayName  string
	CreatedAt    time.Time
	// DeactivatedAt is zero for an active account.
	DeactivatedAt time.Time
	// TermsURL is the terms the person accepted when registering, and
	// TermsAcceptedAt when; empty for accounts an operator created.
	TermsURL        string
	TermsAcceptedAt time.Time
}

// Client is a registered OAuth client. The store keeps its RFC 7591
// metadata as an opaque JSON document; package devicegrant interprets it.
type Client struct {
	ID         string
	SecretHash []byte // nil for public clients
	Metadata   []byte // JSON of the registered metadata
	// CreatedAt is when it was registered, or registered again (a shared
	// public client, P-DCR-6); DeleteUnusedClients counts from it.
	CreatedAt time.Time
	Trusted   bool // the operator lets it skip the consent page
	// MetadataHash identifies identical public registrations (P-DCR-6);
	// nil for clients that must not be shared.
	MetadataHash []byte
}

// GrantState is where a device grant is in its state machine.
type GrantState string

// The states of a device grant. Expiry is not a state: a grant is expired
// when the clock has passed ExpiresAt, whatever its state.
//
//	pending ─approve─▶ approved ─device provisioned─▶ ready ─poll─▶ exchanged
//	   └─deny─▶ denied
//
// Without a homeserver to provision, approval goes straight to ready.
const (
	GrantPending   GrantState = "pending"
	GrantApproved  GrantState = "approved"
	GrantReady     GrantState = "ready"
	GrantDenied    GrantState = "denied"
	GrantExchanged GrantState = "exchanged"
)

// DeviceGrant is one RFC 8628 device authorization request.
type DeviceGrant struct {
	ID             string
	DeviceCodeHash []byte // SHA-256 of the device code
	UserCode       string // normalised: 8 letters, no dash; unique while live
	ClientID       string
	Scope          string
	RequesterIP    string
	RequesterAgent string
	CreatedAt      time.Time
	ExpiresAt      time.Time
	LastPolledAt   time.Time // zero until the first poll
	Interval       time.Duration
	State          GrantState
	UserID         string    // who approved or denied
	DecidedAt      time.Time // when they did
	SessionID      string    // the session the exchange created
}

// AuthCodeStatus is where an authorization-code request is.
type AuthCodeStatus string

// The life of an authorization code: approved and waiting for the Matrix
// device to exist, ready for its code to be minted, issued (the code went
// to the client), used (exchanged for tokens).
const (
	AuthCodeWaiting AuthCodeStatus = "waiting"
	AuthCodeReady   AuthCodeStatus = "ready"
	AuthCodeIssued  AuthCodeStatus = "issued"
	AuthCodeUsed    AuthCodeStatus = "used"
)

// AuthCode is one approved authorization request (RFC 6749 §4.1) and the
// code minted for it.
type AuthCode struct {
	ID            string
	CodeHash      []byte // nil until the code is minted
	ClientID      string
	RedirectURI   string // exactly as presented at the authorization endpoint
	CodeChallenge string // PKCE S256 challenge
	Scope         string
	Nonce         string
	State         string // the client's state parameter, to send back
	ResponseMode  string // query or fragment
	UserID        string
	AuthTime      time.Time // when the person last signed in
	CreatedAt     time.Time
	ExpiresAt     time.Time
	Status        AuthCodeStatus
	SessionID     string // the session its exchange created
}

// SigningKey is an OpenID Connect signing key.
type SigningKey struct {
	ID         string // the JWK "kid"
	Alg        string // e.g. RS256
	PrivatePEM []byte // PKCS#8
	CreatedAt  time.Time
	RetiredAt  time.Time // zero while it signs
}

// Session is one sign-in of one client for one user and one Matrix device.
// It is what the account page lists and ends.
type Session struct {
	ID           string
	UserID       string
	ClientID     string
	DeviceID     string // Matrix device id, from the device scope
	Scope        string
	CreatedAt    time.Time
	LastActiveAt time.Time
	LastIP       string
	EndedAt      time.Time // zero while the session lives
	EndReason    string
	// DeviceName is the display name the client gave its Matrix device
	// (the legacy login's initial_device_display_name); often empty.
	DeviceName string
}

// TokenPair is an access token and the refresh token issued with it.
// Refresh tokens form a chain through SuccessorID for rotation and reuse
// detection.
type TokenPair struct {
	ID              string
	SessionID       string
	AccessHash      []byte
	RefreshHash     []byte
	CreatedAt       time.Time
	AccessExpiresAt time.Time
	// UsedAt is when the client first showed it holds this pair: its access
	// token was introspected or its refresh token presented.
	UsedAt      time.Time
	RotatedAt   time.Time // when the refresh token was exchanged
	SuccessorID string    // the pair issued by that exchange
	RevokedAt   time.Time
}

// AccessToken is what introspection needs to know about an access token,
// read in one lookup.
type AccessToken struct {
	Pair    TokenPair
	Session Session
	User    User
}

// BrowserSession keeps a person signed in on their phone. It is unrelated
// to OAuth sessions.
type BrowserSession struct {
	ID        string
	TokenHash []byte // SHA-256 of the cookie value
	UserID    string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// OutboxEntry is a call the homeserver must receive.
type OutboxEntry struct {
	ID            int64  // assigned by Enqueue, increasing
	UserKey       string // entries with the same key are delivered in ID order
	Call          string // the homeserver endpoint, e.g. "upsert_device"
	Body          []byte // JSON
	ApprovalID    string // the device grant or authorization request waiting for this call: it becomes ready once the call is delivered
	CreatedAt     time.Time
	Attempts      int
	NextAttemptAt time.Time
	LeaseUntil    time.Time // a deliverer holds it until then
	LastError     string
	ParkedAt      time.Time // non-zero: set aside until an operator retries it
}

// Reader holds the lookups. Each returns ErrNotFound when nothing matches.
type Reader interface {
	User(ctx context.Context, id string) (User, error)
	UserByUsername(ctx context.Context, username string) (User, error)
	Users(ctx context.Context) ([]User, error)

	Client(ctx context.Context, id string) (Client, error)
	// ClientByMetadataHash finds the oldest client registered with the
	// given metadata hash.
	ClientByMetadataHash(ctx context.Context, hash []byte) (Client, error)

	DeviceGrant(ctx context.Context, id string) (DeviceGrant, error)
	DeviceGrantByDeviceCode(ctx context.Context, hash []byte) (DeviceGrant, error)
	// DeviceGrantByUserCode finds the grant holding a normalised user code.
	// Callers check expiry themselves.
	DeviceGrantByUserCode(ctx context.Context, userCode string) (DeviceGrant, error)
	// PendingDeviceGrants lists, newest first and at most limit, the
	// grants still waiting for a person at time now.
	PendingDeviceGrants(ctx context.Context, now time.Time, limit int) ([]DeviceGrant, error)

	Session(ctx context.Context, id string) (Session, error)
	// SessionsByDevice lists the live (not ended) sessions of a user on one
	// Matrix device.
	SessionsByDevice(ctx context.Context, userID, deviceID string) ([]Session, error)

	TokenPair(ctx context.Context, id string) (TokenPair, error)
	TokenPairByRefresh(ctx context.Context, hash []byte) (TokenPair, error)
	// AccessToken reads the pair holding an access token hash, with its
	// session and user: the introspection hot path.
	AccessToken(ctx context.Context, hash []byte) (AccessToken, error)

	BrowserSession(ctx context.Context, tokenHash []byte) (BrowserSession, error)

	// SessionsByUser lists a user's sessions, newest first; ended ones only
	// when includeEnded.
	SessionsByUser(ctx context.Context, userID string, includeEnded bool) ([]Session, error)
	// GrantsOfUser lists a user's grants in one of states that have not
	// expired at now, oldest first.
	GrantsOfUser(ctx context.Context, userID string, states []GrantState, now time.Time) ([]DeviceGrant, error)

	AuthCode(ctx context.Context, id string) (AuthCode, error)
	// AuthCodesOfUser lists a user's authorization requests in one of
	// statuses that have not expired at now, oldest first.
	AuthCodesOfUser(ctx context.Context, userID string, statuses []AuthCodeStatus, now time.Time) ([]AuthCode, error)
	AuthCodeByCode(ctx context.Context, hash []byte) (AuthCode, error)
	// GrantsLapsed lists the device grants, of any user, that expired in
	// (after, before] while in one of states, by expiry.
	GrantsLapsed(ctx context.Context, states []GrantState, after, before time.Time) ([]DeviceGrant, error)
	// AuthCodesLapsed lists the authorization requests, of any user, that
	// expired in (after, before] while in one of statuses, by expiry.
	AuthCodesLapsed(ctx context.Context, statuses []AuthCodeStatus, after, before time.Time) ([]AuthCode, error)

	// TokenEpoch returns a number that BumpTokenEpoch increases: caches of
	// token validity compare it to tell, with one tiny read, whether any
	// transaction in any process changed who may use a token since they
	// read. The value reflects every transaction committed before the
	// call; a backend may share one read among concurrent calls only if
	// that read began after each of them.
	TokenEpoch(ctx context.Context) (int64, error)

	// SigningKeys lists the OpenID signing keys, newest first.
	SigningKeys(ctx context.Context) ([]SigningKey, error)

	// OutboxDue returns, for each user key, the oldest entry that is not
	// parked, if it is due at now and not leased: the next call to make
	// for that user. At most limit entries, oldest first.
	OutboxDue(ctx context.Context, now time.Time, limit int) ([]OutboxEntry, error)
	// OutboxHead returns the oldest entry for userKey that is not parked:
	// the one call a deliverer may make next for that user, whatever
	// OutboxDue said a moment ago (an operator may have put a parked
	// entry back in line since).
	OutboxHead(ctx context.Context, userKey string) (OutboxEntry, error)
	// OutboxEntry reads one entry.
	OutboxEntry(ctx context.Context, id int64) (OutboxEntry, error)
	// Outbox lists entries in ID order, at most limit.
	Outbox(ctx context.Context, limit int) ([]OutboxEntry, error)

	// LiveInstances counts the instances (servers sharing this database)
	// whose last Heartbeat was at or after since.
	LiveInstances(ctx context.Context, since time.Time) (int, error)
	// KnownPlace returns when the user last signed in successfully from
	// place (see RememberPlace), or ErrNotFound.
	KnownPlace(ctx context.Context, userID, place string) (time.Time, error)
}

// Tx is one write transaction. Everything written through it becomes visible
// together when the function given to Store.Update returns nil, and not at
// all otherwise.
type Tx interface {
	Reader

	CreateUser(ctx context.Context, u User) error
	UpdateUser(ctx context.Context, u User) error

	CreateClient(ctx context.Context, c Client) error
	UpdateClient(ctx context.Context, c Client) error

	CreateAuthCode(ctx context.Context, a AuthCode) error
	UpdateAuthCode(ctx context.Context, a AuthCode) error

	CreateSigningKey(ctx context.Context, k SigningKey) error
	UpdateSigningKey(ctx context.Context, k SigningKey) error

	// CreateDeviceGrant fails with ErrAlreadyExists when another grant that
	// has not expired at g.CreatedAt holds the same user code. An expired
	// grant holding it gives the code up.
	CreateDeviceGrant(ctx context.Context, g DeviceGrant) error
	UpdateDeviceGrant(ctx context.Context, g DeviceGrant) error

	CreateSession(ctx context.Context, s Session) error
	UpdateSession(ctx context.Context, s Session) error

	CreateTokenPair(ctx context.Context, p TokenPair) error
	UpdateTokenPair(ctx context.Context, p TokenPair) error

	CreateBrowserSession(ctx context.Context, b BrowserSession) error
	DeleteBrowserSession(ctx context.Context, id string) error
	// DeleteBrowserSessionsOfUser signs a user out of every browser but
	// the session keep (which may be empty).
	DeleteBrowserSessionsOfUser(ctx context.Context, userID, keep string) error

	// Enqueue appends an entry and returns its ID.
	Enqueue(ctx context.Context, e OutboxEntry) (int64, error)
	// UpdateOutbox saves an entry's delivery state (attempts, times, error,
	// lease, parked).
	UpdateOutbox(ctx context.Context, e OutboxEntry) error
	// DeleteOutbox removes a delivered entry.
	DeleteOutbox(ctx context.Context, id int64) error
	// DeleteExpired removes device grants, authorization codes and browser
	// sessions that expired before the given time. It returns how many rows went.
	DeleteExpired(ctx context.Context, before time.Time) (int64, error)
	// DeleteUnusedClients removes the clients registered before the given
	// time that no session, device grant or authorization code names and
	// that the operator does not trust: registrations nobody signed in
	// with. A client with a session, live or ended, stays (P-DCR-6).
	DeleteUnusedClients(ctx context.Context, before time.Time) (int64, error)
	// DeleteSpentTokens removes token pairs revoked before the given
	// time, pairs rotated before it whose successor was used before it
	// too, and the pairs of sessions that ended before it. A rotated pair
	// whose successor was never used stays, however old: presenting it is
	// the retry of a lost answer (P-RT-2). Sessions themselves stay, for
	// the record.
	DeleteSpentTokens(ctx context.Context, before time.Time) (int64, error)
	// BumpTokenEpoch increases TokenEpoch, when this transaction commits.
	// A transaction that ends a session, revokes a pair, deactivates a
	// user or deletes pairs calls it.
	BumpTokenEpoch(ctx context.Context) error
	// TakeLease gives the lease called name to holder until the given
	// time, and reports whether it did: it does when the lease is free,
	// expired at now (held until now or earlier), or already held by
	// holder, who then holds it until the new time (which may be earlier
	// than before). It lets several processes on one database share a
	// background job (a purge, a periodic sync): the one whose
	// transaction takes the lease does the job, and a lease held until
	// now plus the job's period makes the job run at most once per
	// period. The lease is taken only if the transaction commits.
	// Leases are a few rows, one per name, that every take overwrites;
	// nothing deletes them.
	TakeLease(ctx context.Context, name, holder string, now, until time.Time) (bool, error)

	// Heartbeat records that the instance id is alive at time at, so
	// that LiveInstances counts it.
	Heartbeat(ctx context.Context, id string, at time.Time) error
	// DeleteInstance removes the instance id, which is stopping, so that
	// LiveInstances no longer counts it; an unknown id is no error.
	DeleteInstance(ctx context.Context, id string) error
	// DeleteInstances removes the instances whose last heartbeat was
	// before the given time, and returns how many went.
	DeleteInstances(ctx context.Context, before time.Time) (int64, error)
	// RememberPlace records that the user signed in successfully from
	// place (an opaque key: a client address, an IPv6 /64) at time at.
	// There is one row per user and place, whose time never moves back;
	// of the user's places only the keep last seen stay (ties broken by
	// place), so that a user cannot make the store grow without bound.
	RememberPlace(ctx context.Context, userID, place string, at time.Time, keep int) error
	// ForgetPlaces removes the places last seen before the given time,
	// and returns how many went.
	ForgetPlaces(ctx context.Context, before time.Time) (int64, error)
}

// Store is a backend.
type Store interface {
	Reader
	// Update runs fn in one write transaction and commits it when fn returns
	// nil. A backend may run fn more than once (to retry a serialization
	// failure), so fn must have no effect outside tx.
	Update(ctx context.Context, fn func(tx Tx) error) error
	// Close releases the backend's resources.
	Close() error
}

// Backuper is implemented by backends that can copy their live database to
// a file while it serves. A backend without it (a server database such as
// PostgreSQL) is backed up with that database's own tools (pg_dump).
type Backuper interface {
	// Backup writes a consistent copy of the database to path, which must
	// not exist yet, readable by the owner only, and checks the copy's
	// integrity before returning.
	Backup(ctx context.Context, path string) error
}

// Announcer is implemented by the Tx of a backend that several processes
// share and that can tell the others what a transaction changed, so that
// what they keep in memory is forgotten at once rather than when it ages
// out (see Watcher). A caller checks for it with a type assertion; without
// it there is nobody to tell.
type Announcer interface {
	// Announce tells every Watch on the same database, but those of this
	// Store value, that key of topic changed, once this transaction has
	// committed; an empty key means every key of topic. If the transaction
	// rolls back (including a run that Update rolls back to run again),
	// nothing is told.
	//
	// Announcements are not secret: on PostgreSQL any session of the
	// database may listen to them. A key must therefore be neither a
	// secret nor a hash of one, but a row id or a digest that reveals
	// nothing the listener does not know already.
	Announce(topic, key string)
}

// Watcher is implemented by a backend that several processes share and
// that delivers what their transactions announce (see Announcer).
type Watcher interface {
	// Watch calls fn with each announcement other processes' transactions
	// make, after they commit and in commit order, until ctx is done; then
	// it returns ctx's error. fn runs on Watch's goroutine, one call at a
	// time, and should not block.
	//
	// Delivery is asynchronous: a change is heard of shortly after its
	// commit, not at it, so a decision that must be exact the moment a
	// change's response is sent cannot rest on Watch alone. Whenever
	// announcements may have been missed (when the watch starts, and again
	// after the backend lost and regained its way of hearing them), fn gets
	// a Notice with Resync set before any other.
	Watch(ctx context.Context, fn func(Notice)) error
}

// A Notice is one thing a Watch heard. The zero Notice says nothing.
//
// A notice can only make a cache forget; anything that may connect to the
// database may be able to send one, so a cache must never take a notice as
// a reason to believe something.
type Notice struct {
	Topic string
	Key   string // empty: every key of Topic
	// Resync means that announcements may have been missed: forget
	// everything learned before it. Err is what interrupted the watch, nil
	// on the first.
	Resync bool
	Err    error
}
