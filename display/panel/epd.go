package panel

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"sync"

	"github.com/devicegrant/devicegrant/display"
)

// EPDDevice is what EPD needs from an e-paper driver. The Dev types of
// periph.io/x/devices/v3/waveshare2in13v2, waveshare2in13v3 and
// waveshare2in13v4 implement it.
type EPDDevice interface {
	Bounds() image.Rectangle
	Draw(r image.Rectangle, src image.Image, sp image.Point) error
	Clear(c color.Color) error
	Sleep() error
}

// EPD shows frames on an e-paper display through its periph.io driver.
// A full refresh takes seconds and flashes the panel, so Show does nothing
// when the frame has not changed: do not put a per-second countdown on
// e-paper (lay the card out without LayoutOptions.Now). It is safe for
// concurrent use.
type EPD struct {
	mu     sync.Mutex
	dev    EPDDevice
	shown  *display.Frame
	closer io.Closer
}

// NewEPD wraps an initialised driver. For the Waveshare 2.13" panels use
// Opts.Origin = TopRight so the driver presents the panel as 250×122
// landscape, which suits a card.
func NewEPD(dev EPDDevice) *EPD { return &EPD{dev: dev} }

// Bounds implements Panel.
func (e *EPD) Bounds() image.Rectangle { return e.dev.Bounds() }

// Show implements Panel.
func (e *EPD) Show(ctx context.Context, img image.Image) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return showChanged(ctx, img, e.dev.Bounds().Size(), &e.shown, func(f *display.Frame) error {
		if err := e.dev.Draw(e.dev.Bounds(), f, image.Point{}); err != nil {
			return fmt.Errorf("panel: e-paper: %w", err)
		}
		return nil
	})
}

// Clear implements Panel: the panel turns white.
func (e *EPD) Clear(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := e.dev.Clear(color.White); err != nil {
		return fmt.Errorf("panel: e-paper: %w", err)
	}
	e.shown = display.NewFrame(e.dev.Bounds().Dx(), e.dev.Bounds().Dy())
	return nil
}

// Close implements Panel: it puts the controller into deep sleep (the
// picture stays) and closes the bus if Open opened it.
func (e *EPD) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	err := e.dev.Sleep()
	if e.closer != nil {
		err = errors.Join(err, e.closer.Close())
	}
	if err != nil {
		return fmt.Errorf("panel: closing e-paper: %w", err)
	}
	return nil
}
