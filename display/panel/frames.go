package panel

import (
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
