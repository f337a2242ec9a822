package panel

import (
	"context"
	"image"

	"github.com/devicegrant/devicegrant/display"
)

// snapshot keeps a copy of img if it is a monochrome frame, for same.
func snapshot(img image.Image) image.Image {
	if f, ok := img.(*display.Frame); ok {
		return display.FrameFromImage(f)
	}
	return nil
}

// same reports whether img is a *display.Frame equal to the snapshot old.
func same(old, img image.Image) bool {
	a, ok1 := old.(*display.Frame)
	b, ok2 := img.(*display.Frame)
	return ok1 && ok2 && a.Equal(b)
}

// showChanged converts img to a frame of the given size and, unless it
// equals *shown or ctx is done, draws it and, if that succeeds, remembers
// it in *shown. The caller holds the panel's lock.
func showChanged(ctx context.Context, img image.Image, size image.Point, shown **display.Frame, draw func(*display.Frame) error) error {
	f := toFrame(img, size)
	if f.Equal(*shown) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := draw(f); err != nil {
		return err
	}
	*shown = f
	return nil
}
