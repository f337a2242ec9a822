package panel

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/devicegrant/devicegrant/display"
)

// PNGFile is a stand-in panel that writes each new frame to a PNG file
// (through a temporary file and a rename, so readers never see half a
// file). It is safe for concurrent use.
type PNGFile struct {
	mu    sync.Mutex
	path  string
	size  image.Point
	shown *display.Frame
}

// NewPNGFile returns a width×height panel writing to path.
func NewPNGFile(path string, width, height int) *PNGFile {
	return &PNGFile{path: path, size: image.Pt(width, height)}
}

// Bounds implements Panel.
func (p *PNGFile) Bounds() image.Rectangle { return image.Rectangle{Max: p.size} }

// Show implements Panel.
func (p *PNGFile) Show(ctx context.Context, img image.Image) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return showChanged(ctx, img, p.size, &p.shown, p.write)
}

// write replaces the file with f as a PNG.
func (p *PNGFile) write(f *display.Frame) error {
	var buf bytes.Buffer
	if err := f.WritePNG(&buf); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p.path), ".panel-*.png")
	if err != nil {
		return fmt.Errorf("panel: %w", err)
	}
	_, err = tmp.Write(buf.Bytes())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("panel: writing %s: %w", p.path, err)
	}
	return nil
}

// Clear implements Panel: a white image.
func (p *PNGFile) Clear(ctx context.Context) error {
	return p.Show(ctx, display.NewFrame(p.size.X, p.size.Y))
}

// Close implements Panel; the file stays.
func (p *PNGFile) Close() error { return nil }

// Terminal is a stand-in panel drawing frames with half blocks
// ([display.WriteHalfBlocks]): a cols×rows screen is cols×2·rows pixels.
// With InPlace set it moves the cursor back up (ESC [ n A) to redraw over
// the previous frame; otherwise each new frame is appended. It is safe
// for concurrent use.
type Terminal struct {
	mu      sync.Mutex
	w       io.Writer
	size    image.Point
	mode    display.TermMode
	inPlace bool
	shown   *display.Frame
}

// NewTerminal returns a panel writing to w, cols columns by rows lines.
func NewTerminal(w io.Writer, cols, rows int, mode display.TermMode, inPlace bool) *Terminal {
	return &Terminal{w: w, size: image.Pt(cols, 2*rows), mode: mode, inPlace: inPlace}
}

// Bounds implements Panel.
func (t *Terminal) Bounds() image.Rectangle { return image.Rectangle{Max: t.size} }

// Show implements Panel.
func (t *Terminal) Show(ctx context.Context, img image.Image) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return showChanged(ctx, img, t.size, &t.shown, func(f *display.Frame) error {
		if t.inPlace && t.shown != nil {
			if _, err := fmt.Fprintf(t.w, "\x1b[%dA", (t.size.Y+1)/2); err != nil {
				return fmt.Errorf("panel: terminal: %w", err)
			}
		}
		return display.WriteHalfBlocks(t.w, f, t.mode)
	})
}

// Clear implements Panel: a blank (white) frame.
func (t *Terminal) Clear(ctx context.Context) error {
	return t.Show(ctx, display.NewFrame(t.size.X, t.size.Y))
}

// Close implements Panel; it does not close the writer.
func (t *Terminal) Close() error { return nil }
