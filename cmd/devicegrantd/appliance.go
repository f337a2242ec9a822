package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/display"
	"github.com/devicegrant/devicegrant/display/panel"
)

// appliance shows the newest pending pairing on a screen attached to the
// machine the daemon runs on, and blanks it once the pairing is approved,
// denied or expired. It looks once a second: a person scanning a code does
// not notice a second, and the store answers the query from an index.
func appliance(ctx context.Context, srv *devicegrant.Server, spec string, log *slog.Logger) error {
	p, err := panel.Open(ctx, spec)
	if err != nil {
		return fmt.Errorf("display %q: %w", spec, err)
	}
	go func() {
		defer p.Close()
		// E-paper takes seconds to refresh and flashes: no ticking clock.
		clock := !strings.HasPrefix(spec, "epd")
		size := p.Bounds().Size()
		showing := ""
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if err := showNewest(ctx, srv, p, size.X, size.Y, clock, &showing); err != nil && ctx.Err() == nil {
				log.Error("appliance display", "err", err)
			}
			select {
			case <-ctx.Done():
				if err := p.Clear(context.Background()); err != nil {
					log.Error("appliance display: clear", "err", err)
				}
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

// showNewest draws the newest pending pairing, or blanks the panel when
// there is none; showing holds the user code on screen ("" when blank).
func showNewest(ctx context.Context, srv *devicegrant.Server, p panel.Panel, w, h int, clock bool, showing *string) error {
	pairings, err := srv.PendingPairings(ctx, 1)
	if err != nil {
		return err
	}
	if len(pairings) == 0 {
		if *showing != "" {
			*showing = ""
			return p.Clear(ctx)
		}
		return nil
	}
	var now time.Time
	if clock {
		now = time.Now()
	}
	frame, _, err := pairings[0].Card().Layout(w, h, display.LayoutOptions{Now: now})
	if err != nil {
		return err
	}
	*showing = pairings[0].UserCode
	return p.Show(ctx, frame)
}
