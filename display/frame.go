package display

import (
	"fmt"
	"image"
	"image/color"
)

// Frame is a monochrome bitmap. A set bit is ink: a dark QR module or a
// stroke of text, printed black on paper and left unlit on an OLED.
//
// Bits holds the rows top to bottom, each row Stride() bytes long, the
// leftmost pixel in the most significant bit: the layout of a binary PBM
// (P4) raster. The zero value is an empty 0×0 frame.
//
// Frame implements [image.Image] (ink is black, the rest white) so it can be
// handed to image/png or to any periph.io display driver.
type Frame struct {
	Width, Height int
	Bits          []byte
}

// NewFrame returns a blank (all white) frame of the given size.
func NewFrame(width, height int) *Frame {
	if width < 0 || height < 0 {
		width, height = 0, 0
	}
	return &Frame{Width: width, Height: height, Bits: make([]byte, (width+7)/8*height)}
}

// Stride is the number of bytes per row in Bits.
func (f *Frame) Stride() int { return (f.Width + 7) / 8 }

// Ink reports whether pixel (x, y) is ink. Pixels outside the frame are not.
func (f *Frame) Ink(x, y int) bool {
	if x < 0 || y < 0 || x >= f.Width || y >= f.Height {
		return false
	}
	return f.Bits[y*f.Stride()+x/8]&(0x80>>(x%8)) != 0
}

// SetInk sets or clears pixel (x, y). Pixels outside the frame are ignored.
func (f *Frame) SetInk(x, y int, ink bool) {
	if x < 0 || y < 0 || x >= f.Width || y >= f.Height {
		return
	}
	i, m := y*f.Stride()+x/8, byte(0x80>>(x%8))
	if ink {
		f.Bits[i] |= m
	} else {
		f.Bits[i] &^= m
	}
}

// FillRect sets every pixel of r (clipped to the frame) to ink.
func (f *Frame) FillRect(r image.Rectangle, ink bool) {
	r = r.Intersect(image.Rect(0, 0, f.Width, f.Height))
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			f.SetInk(x, y, ink)
		}
	}
}

// Equal reports whether two frames have the same size and pixels.
func (f *Frame) Equal(g *Frame) bool {
	if f == nil || g == nil {
		return f == g
	}
	if f.Width != g.Width || f.Height != g.Height {
		return false
	}
	for y := 0; y < f.Height; y++ {
		for x := 0; x < f.Width; x++ {
			if f.Ink(x, y) != g.Ink(x, y) {
				return false
			}
		}
	}
	return true
}

// Scale returns the frame enlarged k times with nearest-neighbour sampling,
// handy for looking at a 128×32 panel image on a desktop screen.
func (f *Frame) Scale(k int) *Frame {
	if k < 1 {
		k = 1
	}
	g := NewFrame(f.Width*k, f.Height*k)
	for y := 0; y < g.Height; y++ {
		for x := 0; x < g.Width; x++ {
			g.SetInk(x, y, f.Ink(x/k, y/k))
		}
	}
	return g
}

// ColorModel implements [image.Image]; it is [color.GrayModel].
func (f *Frame) ColorModel() color.Model { return color.GrayModel }

// Bounds implements [image.Image]; the origin is (0, 0).
func (f *Frame) Bounds() image.Rectangle { return image.Rect(0, 0, f.Width, f.Height) }

// At implements [image.Image]: black for ink, white otherwise.
func (f *Frame) At(x, y int) color.Color {
	if f.Ink(x, y) {
		return color.Gray{Y: 0}
	}
	return color.Gray{Y: 0xff}
}

// FrameFromImage converts any image to a Frame, treating pixels darker than
// mid-grey (after alpha-compositing on white) as ink. The frame's origin is
// the image's Bounds().Min. A *Frame is copied.
func FrameFromImage(img image.Image) *Frame {
	b := img.Bounds()
	f := NewFrame(b.Dx(), b.Dy())
	if src, ok := img.(*Frame); ok {
		copy(f.Bits, src.Bits)
		return f
	}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			// Composite on white, then use Rec. 601 luma in 16-bit units.
			w := 0xffff - a
			lum := (299*(r+w) + 587*(g+w) + 114*(bl+w)) / 1000
			f.SetInk(x-b.Min.X, y-b.Min.Y, lum < 0x8000)
		}
	}
	return f
}

// Pages encodes the frame in SSD1306/SH1106 page order: the frame is cut
// into pages of 8 rows; each page is Width bytes, one per column, left to
// right; in each byte bit 0 is the top row of the page and bit 7 the bottom.
// A set bit is a lit pixel, that is NOT ink: the card is drawn as dark
// modules on a lit background, like paper. The frame height must be a
// multiple of 8. The result can be copied to the panel's RAM unchanged.
func (f *Frame) Pages() ([]byte, error) {
	if f.Height%8 != 0 {
		return nil, fmt.Errorf("display: frame height %d is not a multiple of 8", f.Height)
	}
	out := make([]byte, f.Width*f.Height/8)
	for p := 0; p < f.Height/8; p++ {
		for x := 0; x < f.Width; x++ {
			var b byte
			for bit := 0; bit < 8; bit++ {
				if !f.Ink(x, p*8+bit) {
					b |= 1 << bit
				}
			}
			out[p*f.Width+x] = b
		}
	}
	return out, nil
}

// FrameFromPages is the inverse of [Frame.Pages]: it decodes width×height
// pixels from SSD1306 page-order bytes (set bit = lit = not ink).
func FrameFromPages(pages []byte, width, height int) (*Frame, error) {
	if height%8 != 0 || len(pages) != width*height/8 {
		return nil, fmt.Errorf("display: %d page bytes do not make a %d×%d frame", len(pages), width, height)
	}
	f := NewFrame(width, height)
	for i, b := range pages {
		p, x := i/width, i%width
		for bit := 0; bit < 8; bit++ {
			f.SetInk(x, p*8+bit, b&(1<<bit) == 0)
		}
	}
	return f, nil
}
