// Package panel shows display frames on real screens: SSD1306 and SH1106
// OLEDs over I²C or SPI, Waveshare 2.13" e-paper, Linux framebuffers, and
// two stand-ins (a PNG file, a text terminal). [Open] builds any of them
// from a one-line spec string for configuration files.
//
// Every Panel skips the bus entirely when asked to show the frame it
// already shows, so an appliance can redraw its card every second (for the
// countdown) and only the changed part travels: on an OLED only the pages
// and columns that differ, on e-paper nothing unless the frame changed.
package panel

import (
	"context"
	"image"

	"github.com/devicegrant/devicegrant/display"
)

// Panel is a screen a card can be shown on.
type Panel interface {
	// Bounds is the drawable area; Min is (0, 0). Lay the card out at this
	// size ([display.Card.Layout]).
	Bounds() image.Rectangle
	// Show displays img, drawn from its Bounds().Min at the panel's
	// origin; parts outside the panel are cut, parts of the panel outside
	// img are left blank. Monochrome panels threshold at mid-grey. It sends
	// nothing if the panel already shows the same picture.
	Show(ctx context.Context, img image.Image) error
	// Clear blanks the panel.
	Clear(ctx context.Context) error
	// Close releases the panel and, when Open opened it, its bus.
	Close() error
}

// toFrame converts img to a frame of exactly the given size, anchored at
// the image's Bounds().Min; uncovered pixels are white (no ink).
func toFrame(img image.Image, size image.Point) *display.Frame {
	src := display.FrameFromImage(img)
	if src.Width == size.X && src.Height == size.Y {
		return src
	}
	f := display.NewFrame(size.X, size.Y)
	for y := 0; y < min(size.Y, src.Height); y++ {
		for x := 0; x < min(size.X, src.Width); x++ {
			f.SetInk(x, y, src.Ink(x, y))
		}
	}
	return f
}
