package devicegrant

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// The homeserver contract (P-HS-3, P-HS-4): current Synapse creates no
// users or devices itself; its auth server provisions them through
// /_synapse/mas/*. Every such call goes through the outbox, written in the
// same transaction as the change that causes it, so none is lost when the
// homeserver is down or this process restarts.

// Homeserver calls, as path names under /_synapse/mas/.
const (
	callProvisionUser = "provision_user"
	callUpsertDevice  = "upsert_device"
	callDeleteDevice  = "delete_device"
	callSyncDevices   = "sync_devices"
	callDeleteUser    = "delete_user"

	callAllowCrossSigningReset = "allow_cross_signing_reset"
)

// provisioning reports whether a homeserver is configured to provision.
func (s *Server) provisioning() bool { return s.cfg.HomeserverEndpoint != "" }

// enqueue adds a homeserver call to the outbox inside tx. It does nothing
// without a homeserver. approvalID names the device grant or
// authorization request that waits for the call (its Matrix device), or is
// empty.
func (s *Server) enqueue(ctx context.Context, tx store.Tx, localpart, call string, body any, approvalID string) error {
	_, err := s.enqueueID(ctx, tx, localpart, call, body, approvalID)
	return err
}

// provisionDevice queues the upsert_device that creates (or renames) the
// Matrix device deviceID of localpart, which must be delivered before any
// token for that device is handed out (P-HS-3). approvalID names the
// device grant or authorization request that waits for the call. It
// returns the entry's id: 0 when nothing needs to wait (no homeserver, or
// no device).
func (s *Server) provisionDevice(ctx context.Context, tx store.Tx, localpart, deviceID, displayName, approvalID string) (int64, error) {
	if deviceID == "" {
		return 0, nil
	}
	return s.enqueueID(ctx, tx, localpart, callUpsertDevice, deviceBody{Localpart: localpart, DeviceID: deviceID, DisplayName: displayName}, approvalID)
}

// enqueueID is enqueue, returning the entry's ID (0 without a homeserver)
// for a caller that waits for its delivery.
func (s *Server) enqueueID(ctx context.Context, tx store.Tx, localpart, call string, body any, approvalID string) (int64, error) {
	if !s.provisioning() {
		return 0, nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", call, err)
	}
	now := s.now()
	// The deliverer is woken when the transaction commits (committing):
	// woken now, it would find nothing new and sleep until its next tick.
	return tx.Enqueue(ctx, store.OutboxEntry{UserKey: localpart, Call: call, Body: b, ApprovalID: approvalID,
		CreatedAt: now, NextAttemptAt: now})
}

func (s *Server) kickOutbox() {
	select {
	case s.outboxKick <- struct{}{}:
	default:
	}
}

// homeserverError is a failed call, with whether trying again can help.
type homeserverError struct {
	status    int // 0 for transport errors
	msg       string
	permanent bool
}

func (e *homeserverError) Error() string { return e.msg }

// callHomeserver POSTs one call to {endpoint}/_synapse/mas/{call}.
func (s *Server) callHomeserver(ctx context.Context, call string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	u := strings.TrimSuffix(s.cfg.HomeserverEndpoint, "/") + "/_synapse/mas/" + call
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return &homeserverError{msg: err.Error(), permanent: true}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.cfg.HomeserverSecret)
	resp, err := s.httpClient.Do(req)
	if err != nil {
		return &homeserverError{msg: fmt.Sprintf("%s: %v", call, err)}
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return &homeserverError{
		status: resp.StatusCode,
		msg:    fmt.Sprintf("%s: homeserver answered %s: %s", call, resp.Status, bytes.TrimSpace(msg)),
		// 4xx (but a timeout or a rate limit) will not change by
		// waiting; such calls are parked after a while.
		permanent: resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != 408 && resp.StatusCode != 429,
	}
}

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
