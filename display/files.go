package display

import (
	"bufio"
	"fmt"
	"html"
	"image"
	"image/color"
	"image/png"
	"io"
)

// ImageOptions tune the card files ([Card.Image], [Card.WritePNG],
// [Card.WriteSVG], [Card.WritePBM]). The zero value gives 8 pixels per
// module, level M and the full 4-module quiet zone.
type ImageOptions struct {
	// Scale is the size of a module in pixels; zero means 8.
	Scale int
	// Level is the error-correction level; zero means M.
	Level Level
}

// ImageFit lays the card out at its natural size for a file: the symbol
// with a 4-module quiet zone on top, the user code below it at about two
// thirds of the module size per font pixel, then the short URI at half that.
func (c Card) ImageFit(opt ImageOptions) (Fit, error) {
	if c.URI == "" {
		return Fit{}, fmt.Errorf("display: card has no URI")
	}
	s := opt.Scale
	if s <= 0 {
		s = 8
	}
	qr, err := EncodeQR(c.URI, opt.Level)
	if err != nil {
		return Fit{}, err
	}
	const q = 4
	n := qr.Size
	b := (n + 2*q) * s
	cs := max(1, s*2/3)
	p, _ := planText(c.UserCode, c.ShortURI, "", 1<<20, 1<<20, cs, max(1, cs/2))
	w := max(b, p.w+2*q*s)
	h := b
	if p.h > 0 {
		h += p.h + q*s
	}
	f := Fit{Width: w, Height: h, Version: qr.Version, Level: qr.Level, Modules: n,
		Scale: s, Quiet: q, Placement: Below, CodeScale: p.codeScale,
		CodeLines: p.line, ShortURI: p.uri, qr: qr}
	f.Symbol = image.Rect((w-n*s)/2, q*s, (w-n*s)/2+n*s, q*s+n*s)
	for _, it := range p.items {
		it.x += (w - p.w) / 2
		it.y += b
		f.text = append(f.text, it)
	}
	return f, nil
}

// Image draws the card at its natural size (see [Card.ImageFit]).
func (c Card) Image(opt ImageOptions) (*Frame, error) {
	f, err := c.ImageFit(opt)
	if err != nil {
		return nil, err
	}
	return f.draw(), nil
}

// WritePNG writes the card as a 1-bit PNG.
func (c Card) WritePNG(w io.Writer, opt ImageOptions) error {
	f, err := c.Image(opt)
	if err != nil {
		return err
	}
	return f.WritePNG(w)
}

// WritePBM writes the card as a binary PBM (P4) image.
func (c Card) WritePBM(w io.Writer, opt ImageOptions) error {
	f, err := c.Image(opt)
	if err != nil {
		return err
	}
	return f.WritePBM(w)
}

// WriteSVG writes the card as an SVG document: one black rect per
// horizontal run of dark modules (in a group with id "qr") on a white
// background, and the texts as <text> elements in a monospace font. The
// geometry is the same as [Card.Image]'s, in pixels.
func (c Card) WriteSVG(w io.Writer, opt ImageOptions) error {
	f, err := c.ImageFit(opt)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" shape-rendering="crispEdges">`+"\n",
		f.Width, f.Height, f.Width, f.Height)
	fmt.Fprintf(bw, `<rect id="bg" x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", f.Width, f.Height)
	fmt.Fprintf(bw, `<g id="qr" fill="#000000">`+"\n")
	for my := 0; my < f.Modules; my++ {
		for mx := 0; mx < f.Modules; {
			if !f.qr.Dark(mx, my) {
				mx++
				continue
			}
			run := 1
			for f.qr.Dark(mx+run, my) {
				run++
			}
			fmt.Fprintf(bw, `<rect x="%d" y="%d" width="%d" height="%d"/>`+"\n",
				f.Symbol.Min.X+mx*f.Scale, f.Symbol.Min.Y+my*f.Scale, run*f.Scale, f.Scale)
			mx += run
		}
	}
	fmt.Fprintf(bw, "</g>\n")
	for _, it := range f.text {
		// The 5×7 font's cap height is 7 pixels per scale; a monospace
		// font's cap height is about 0.7 em.
		fmt.Fprintf(bw, `<text x="%d" y="%d" font-family="monospace" font-weight="bold" font-size="%d" text-anchor="middle" fill="#000000">%s</text>`+"\n",
			it.x+textWidth(it.s, it.scale)/2, it.y+textHeight(it.scale), 10*it.scale, html.EscapeString(it.s))
	}
	fmt.Fprintf(bw, "</svg>\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("display: writing SVG: %w", err)
	}
	return nil
}

// WritePNG writes the frame as a 1-bit palette PNG (ink black, rest white).
func (f *Frame) WritePNG(w io.Writer) error {
	p := image.NewPaletted(f.Bounds(), color.Palette{color.White, color.Black})
	for y := 0; y < f.Height; y++ {
		for x := 0; x < f.Width; x++ {
			if f.Ink(x, y) {
				p.Pix[y*p.Stride+x] = 1
			}
		}
	}
	if err := png.Encode(w, p); err != nil {
		return fmt.Errorf("display: writing PNG: %w", err)
	}
	return nil
}

// WritePBM writes the frame as a binary PBM (P4): ink is 1 (black).
func (f *Frame) WritePBM(w io.Writer) error {
	if _, err := fmt.Fprintf(w, "P4\n%d %d\n", f.Width, f.Height); err != nil {
		return fmt.Errorf("display: writing PBM: %w", err)
	}
	if _, err := w.Write(f.Bits); err != nil {
		return fmt.Errorf("display: writing PBM: %w", err)
	}
	return nil
}
