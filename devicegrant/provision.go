package devicegrant

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// Bodies of the homeserver calls (P-HS-4).
type (
	provisionUserBody struct {
		Localpart      string `json:"localpart"`
		SetDisplayname string `json:"set_displayname,omitempty"`
	}
	deviceBody struct {
		Localpart   string `json:"localpart"`
		DeviceID    string `json:"device_id"`
		DisplayName string `json:"display_name,omitempty"`
	}
	syncDevicesBody struct {
		Localpart string   `json:"localpart"`
		Devices   []string `json:"devices"`
	}
	deleteUserBody struct {
		Localpart string `json:"localpart"`
		Erase     bool   `json:"erase"`
	}
)

// endSession ends a session: every token of it stops working at once,
// since validity is read through the session. Its Matrix device is deleted
// from the homeserver unless another live session or a grant on its way
// still uses that device id.
func (s *Server) endSession(ctx context.Context, tx store.Tx, sess store.Session, reason string, now time.Time) error {
	if !sess.EndedAt.IsZero() {
		return nil
	}
	sess.EndedAt, sess.EndReason = now, reason
	if err := tx.UpdateSession(ctx, sess); err != nil {
		return err
	}
	if sess.DeviceID == "" || reason == endReplaced || reason == endDeactivated || !s.provisioning() {
		return nil
	}
	inUse, err := s.deviceInUse(ctx, tx, sess.UserID, sess.DeviceID, now)
	if err != nil || inUse {
		return err
	}
	user, err := tx.User(ctx, sess.UserID)
	if err != nil {
		return err
	}
	return s.enqueue(ctx, tx, user.Username, callDeleteDevice, deviceBody{Localpart: user.Username, DeviceID: sess.DeviceID}, "")
}

func (s *Server) deviceInUse(ctx context.Context, tx store.Tx, userID, deviceID string, now time.Time) (bool, error) {
	live, err := tx.SessionsByDevice(ctx, userID, deviceID)
	if err != nil || len(live) > 0 {
		return len(live) > 0, err
	}
	devices, err := s.devicesOf(ctx, tx, userID, now)
	if err != nil {
		return false, err
	}
	for _, d := range devices {
		if d == deviceID {
			return true, nil
		}
	}
	return false, nil
}

// devicesOf lists the Matrix devices a user must have on the homeserver:
// those of live sessions, of device grants approved but not yet exchanged,
// and of authorization requests approved but not yet exchanged.
func (s *Server) devicesOf(ctx context.Context, r store.Reader, userID string, now time.Time) ([]string, error) {
	sessions, err := r.SessionsByUser(ctx, userID, false)
	if err != nil {
		return nil, err
	}
	grants, err := r.GrantsAwaitingDevice(ctx, userID, now)
	if err != nil {
		return nil, err
	}
	codes, err := r.AuthCodesAwaitingDevice(ctx, userID, now)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, x := range sessions {
		if x.DeviceID != "" {
			set[x.DeviceID] = true
		}
	}
	scopes := make([]string, 0, len(grants)+len(codes))
	for _, g := range grants {
		scopes = append(scopes, g.Scope)
	}
	for _, a := range codes {
		scopes = append(scopes, a.Scope)
	}
	for _, scope := range scopes {
		if sc, err := parseScopes(scope); err == nil && sc.deviceID != "" {
			set[sc.deviceID] = true
		}
	}
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out, nil
}

// SyncDevices queues, for every active user, a sync_devices call listing
// the devices that should exist, so the homeserver drops devices whose
// sessions ended while a call was lost (or the homeserver's database was
// restored) and recreates missing ones. With provisionUsers it first
// queues provision_user for each, which repairs a homeserver that never
// heard of a user (say, accounts created before a homeserver was
// configured). The daemon does both at start and syncs periodically.
func (s *Server) SyncDevices(ctx context.Context, provisionUsers bool) error {
	if !s.provisioning() {
		return nil
	}
	users, err := s.store.Users(ctx)
	if err != nil {
		return fmt.Errorf("devicegrant: sync devices: %w", err)
	}
	for _, u := range users {
		if !u.DeactivatedAt.IsZero() {
			continue
		}
		err := s.store.Update(ctx, func(tx store.Tx) error {
			if provisionUsers {
				if err := s.enqueue(ctx, tx, u.Username, callProvisionUser, provisionUserBody{Localpart: u.Username, SetDisplayname: u.DisplayName}, ""); err != nil {
					return err
				}
			}
			// Read inside the transaction, so the list and the calls
			// queued after it are in the same order as the changes.
			devices, err := s.devicesOf(ctx, tx, u.ID, s.now())
			if err != nil {
				return err
			}
			return s.enqueue(ctx, tx, u.Username, callSyncDevices, syncDevicesBody{Localpart: u.Username, Devices: devices}, "")
		})
		if err != nil {
			return fmt.Errorf("devicegrant: sync devices of %s: %w", u.Username, err)
		}
	}
	return nil
}

// ErrUsernameTaken is returned by CreateUser for a username that exists or
// existed (P-ACCT-2: Matrix user ids are never reused).
var ErrUsernameTaken = errors.New("username is taken")

// CreateUser adds a local account with an argon2id hash of password and,
// with a homeserver configured, queues its provisioning.
func (s *Server) CreateUser(ctx context.Context, username, password, displayName string) (store.User, error) {
	return s.createUser(ctx, username, password, displayName, "")
}

// DeactivateUser deactivates an account for good (P-ACCT-2: the username
// is never given out again): its sessions end, and the homeserver is told
// to deactivate the Matrix user, which deletes its devices.
func (s *Server) DeactivateUser(ctx context.Context, userID string) error {
	err := s.store.Update(ctx, func(tx store.Tx) error {
		u, err := tx.User(ctx, userID)
		if err != nil || !u.DeactivatedAt.IsZero() {
			return err
		}
		now := s.now()
		u.DeactivatedAt = now
		if err := tx.UpdateUser(ctx, u); err != nil {
			return err
		}
		sessions, err := tx.SessionsByUser(ctx, u.ID, false)
		if err != nil {
			return err
		}
		for _, x := range sessions {
			if err := s.endSession(ctx, tx, x, endDeactivated, now); err != nil {
				return err
			}
		}
		return s.enqueue(ctx, tx, u.Username, callDeleteUser, deleteUserBody{Localpart: u.Username}, "")
	})
	if err != nil {
		return fmt.Errorf("devicegrant: deactivate user: %w", err)
	}
	return nil
}

// TrustClient marks a registered client as trusted by the operator, so it
// skips the consent page (or, with trusted false, no longer does).
func (s *Server) TrustClient(ctx context.Context, clientID string, trusted bool) error {
	err := s.store.Update(ctx, func(tx store.Tx) error {
		c, err := tx.Client(ctx, clientID)
		if err != nil {
			return err
		}
		c.Trusted = trusted
		return tx.UpdateClient(ctx, c)
	})
	if err != nil {
		return fmt.Errorf("devicegrant: trust client %s: %w", clientID, err)
	}
	return nil
}
