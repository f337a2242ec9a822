package panel

import (
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"io"
	"sync"
)

// Bitfield is where one colour channel sits in a framebuffer pixel, as in
// struct fb_bitfield.
type Bitfield struct{ Offset, Length int }

// FBGeometry describes a framebuffer's memory: what FBIOGET_VSCREENINFO
// and FBIOGET_FSCREENINFO report. Pixels are little-endian words.
type FBGeometry struct {
	Width, Height    int // visible resolution (xres, yres)
	BitsPerPixel     int // 16 (RGB565) or 32 (XRGB8888)
	LineLength       int // bytes per line, at least Width×BitsPerPixel/8
	XOffset, YOffset int // visible area's origin in the virtual screen
	// Red, Green and Blue are the channel layout; all zero means RGB565
	// for 16 bits per pixel and XRGB8888 for 32.
	Red, Green, Blue Bitfield
}

func (g FBGeometry) norm() (FBGeometry, error) {
	if g.Red == (Bitfield{}) && g.Green == (Bitfield{}) && g.Blue == (Bitfield{}) {
		switch g.BitsPerPixel {
		case 16:
			g.Red, g.Green, g.Blue = Bitfield{11, 5}, Bitfield{5, 6}, Bitfield{0, 5}
		case 32:
			g.Red, g.Green, g.Blue = Bitfield{16, 8}, Bitfield{8, 8}, Bitfield{0, 8}
		}
	}
	if g.BitsPerPixel != 16 && g.BitsPerPixel != 32 {
		return g, fmt.Errorf("panel: framebuffer with %d bits per pixel not supported", g.BitsPerPixel)
	}
	if g.Width <= 0 || g.Height <= 0 || g.LineLength < (g.XOffset+g.Width)*g.BitsPerPixel/8 {
		return g, fmt.Errorf("panel: bad framebuffer geometry %+v", g)
	}
	return g, nil
}

// pixel packs a colour for this geometry.
func (g FBGeometry) pixel(c color.Color) uint32 {
	r, gr, b, _ := c.RGBA()
	ch := func(v uint32, f Bitfield) uint32 { return v >> (16 - f.Length) << f.Offset }
	return ch(r, g.Red) | ch(gr, g.Green) | ch(b, g.Blue)
}

// WriteFB writes img to framebuffer memory w with geometry g: one WriteAt
// per line at (YOffset+y)×LineLength + XOffset×bytes per pixel, so padding
// at the end of each line is left alone. Pixels of the screen outside img
// are written white; parts of img outside the screen are cut. w can be
// the device file or any io.WriterAt, such as a temporary file in a test.
func WriteFB(ctx context.Context, w io.WriterAt, g FBGeometry, img image.Image) error {
	g, err := g.norm()
	if err != nil {
		return err
	}
	bpp := g.BitsPerPixel / 8
	b := img.Bounds()
	line := make([]byte, g.Width*bpp)
	white := g.pixel(color.White)
	for y := 0; y < g.Height; y++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		for x := 0; x < g.Width; x++ {
			px := white
			if p := image.Pt(b.Min.X+x, b.Min.Y+y); p.In(b) {
				px = g.pixel(img.At(p.X, p.Y))
			}
			if bpp == 2 {
				binary.LittleEndian.PutUint16(line[x*2:], uint16(px))
			} else {
				binary.LittleEndian.PutUint32(line[x*4:], px)
			}
		}
		off := int64(g.YOffset+y)*int64(g.LineLength) + int64(g.XOffset*bpp)
		if _, err := w.WriteAt(line, off); err != nil {
			return fmt.Errorf("panel: framebuffer line %d: %w", y, err)
		}
	}
	return nil
}

// FB is a Linux framebuffer panel. It is safe for concurrent use.
type FB struct {
	mu    sync.Mutex
	w     io.WriterAt
	c     io.Closer
	g     FBGeometry
	shown image.Image
}

// NewFB returns a panel writing to w with geometry g. If w is also an
// io.Closer, Close closes it.
func NewFB(w io.WriterAt, g FBGeometry) (*FB, error) {
	g, err := g.norm()
	if err != nil {
		return nil, err
	}
	fb := &FB{w: w, g: g}
	if c, ok := w.(io.Closer); ok {
		fb.c = c
	}
	return fb, nil
}

// Geometry returns the framebuffer's geometry.
func (f *FB) Geometry() FBGeometry { return f.g }

// Bounds implements Panel.
func (f *FB) Bounds() image.Rectangle { return image.Rect(0, 0, f.g.Width, f.g.Height) }

// Show implements Panel. It skips the write when img is the same
// *display.Frame content as last time (other image types are always
// written).
func (f *FB) Show(ctx context.Context, img image.Image) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if same(f.shown, img) {
		return nil
	}
	if err := WriteFB(ctx, f.w, f.g, img); err != nil {
		return err
	}
	f.shown = snapshot(img)
	return nil
}

// Clear implements Panel: the screen turns white.
func (f *FB) Clear(ctx context.Context) error {
	return f.Show(ctx, image.Rect(0, 0, 0, 0))
}

// Close implements Panel.
func (f *FB) Close() error {
	if f.c != nil {
		if err := f.c.Close(); err != nil {
			return fmt.Errorf("panel: closing framebuffer: %w", err)
		}
	}
	return nil
}
