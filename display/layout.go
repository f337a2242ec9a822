package display

import (
	"errors"
	"fmt"
	"image"
	"time"
)

// Placement says where a card's text goes relative to its QR symbol.
type Placement int

// Text placements.
const (
	Beside Placement = iota + 1 // text to the right of the symbol
	Below                       // text under the symbol
)

// String returns "beside" or "below".
func (p Placement) String() string {
	switch p {
	case Beside:
		return "beside"
	case Below:
		return "below"
	}
	return "none"
}

// LayoutOptions tune [Card.Layout]. The zero value picks everything
// automatically and shows no countdown.
type LayoutOptions struct {
	// Now, when non-zero and the card has an expiry, adds the time left
	// ("9:41") to the text if there is room.
	Now time.Time
	// Level forces an error-correction level; zero lets the fitter choose.
	Level Level
	// MinQuiet is the smallest quiet zone, in modules, the fitter accepts;
	// zero means 2. The fitter always keeps the standard 4 when it fits.
	MinQuiet int
}

// Fit records how a card was laid out on a width×height surface.
type Fit struct {
	Width, Height int
	Version       int   // QR version
	Level         Level // QR error-correction level
	Modules       int   // symbol size in modules, 17+4×Version
	Scale         int   // pixels per module
	Quiet         int   // quiet zone kept on every side, in modules
	// Symbol is the QR symbol's rectangle in pixels, quiet zone excluded.
	Symbol    image.Rectangle
	Placement Placement
	CodeScale int  // font scale of the user code (1 = 5×7 pixels)
	CodeLines int  // 1, or 2 when split at its dash
	ShortURI  bool // the short URI is on the card
	Countdown bool // the time left is on the card

	qr   *QR
	text []textItem
}

// textItem is one line of text and where it is drawn.
type textItem struct {
	s           string
	x, y, scale int
}

// textPlan is a block of lines stacked vertically, positions relative to
// the block's top-left corner.
type textPlan struct {
	items           []textItem
	w, h            int
	codeScale, line int
	uri, clock      bool
}

// planText stacks the user code (required, as large as possible up to
// maxScale, on one line or split at its dash), then the short URI and the
// clock, each at most minorMax (and no larger than the code), when they fit
// in rw×rh.
func planText(code, uri, clock string, rw, rh, maxScale, minorMax int) (textPlan, bool) {
	var p textPlan
	forms := codeForms(code)
	if len(forms) > 0 {
		found := false
	scales:
		for s := maxScale; s >= 1; s-- {
			for _, lines := range forms {
				w, h := 0, len(lines)*textHeight(s)+(len(lines)-1)*2*s
				for _, l := range lines {
					w = max(w, textWidth(l, s))
				}
				if w <= rw && h <= rh {
					for i, l := range lines {
						p.items = append(p.items, textItem{s: l, y: i * (textHeight(s) + 2*s), scale: s})
					}
					p.w, p.h, p.codeScale, p.line, found = w, h, s, len(lines), true
					break scales
				}
			}
		}
		if !found {
			return p, false
		}
	}
	gap := 2 * max(1, p.codeScale)
	add := func(forms []string) bool {
		for s := max(1, min(p.codeScale, minorMax)); s >= 1; s-- {
			for _, f := range forms {
				y := p.h
				if len(p.items) > 0 {
					y += gap
				}
				w := textWidth(f, s)
				if w <= rw && y+textHeight(s) <= rh {
					p.items = append(p.items, textItem{s: f, y: y, scale: s})
					p.w, p.h = max(p.w, w), y+textHeight(s)
					return true
				}
			}
		}
		return false
	}
	p.uri = add(uriForms(uri))
	if clock != "" {
		p.clock = add([]string{clock})
	}
	// Centre each line horizontally in the block.
	for i := range p.items {
		p.items[i].x = (p.w - textWidth(p.items[i].s, p.items[i].scale)) / 2
	}
	return p, true
}

// Layout fits the card on a width×height monochrome surface (a panel) and
// draws it. It picks, in this order of preference: the largest scale in
// whole pixels per module; at that scale the highest error-correction
// level; then the widest quiet zone up to the standard 4 modules, never
// less than opt.MinQuiet (default 2). The user code must fit beside or
// below the symbol at least at font scale 1; the short URI (without its
// scheme if need be) and the clock are added when there is room. It fails
// with an error wrapping [ErrTooLong] if nothing fits.
func (c Card) Layout(width, height int, opt LayoutOptions) (*Frame, Fit, error) {
	fit, err := c.Fit(width, height, opt)
	if err != nil {
		return nil, fit, err
	}
	return fit.draw(), fit, nil
}

// Fit computes the layout [Card.Layout] would draw, without drawing it.
func (c Card) Fit(width, height int, opt LayoutOptions) (Fit, error) {
	if c.URI == "" {
		return Fit{}, errors.New("display: card has no URI")
	}
	minQ := opt.MinQuiet
	if minQ <= 0 {
		minQ = 2
	}
	levels := []Level{LevelH, LevelQ, LevelM, LevelL}
	if opt.Level != 0 {
		levels = []Level{opt.Level.norm()}
	}
	clock := ""
	if !opt.Now.IsZero() {
		clock = c.Clock(opt.Now)
	}
	var best Fit
	var lastErr error
	for _, lv := range levels {
		qr, err := EncodeQR(c.URI, lv)
		if err != nil {
			lastErr = err
			continue
		}
		n := qr.Size
		for s := min(width, height) / (n + 2*minQ); s >= 1 && s > best.Scale; s-- {
			f, ok := fitAt(qr, s, minQ, width, height, c, clock)
			if ok {
				best = f
				break
			}
		}
	}
	if best.Scale == 0 {
		if lastErr != nil {
			return Fit{}, fmt.Errorf("display: card on %d×%d: %w", width, height, lastErr)
		}
		return Fit{}, fmt.Errorf("%w: card on %d×%d", ErrTooLong, width, height)
	}
	return best, nil
}

// fitAt tries symbol qr at s pixels per module: widest quiet zone first,
// text beside or below, whichever gives the larger user code.
func fitAt(qr *QR, s, minQ, width, height int, c Card, clock string) (Fit, bool) {
	n := qr.Size
	for q := 4; q >= minQ; q-- {
		b := (n + 2*q) * s
		if b > width || b > height {
			continue
		}
		maxText := s + 1
		beside, okB := planText(c.UserCode, c.ShortURI, clock, width-b, height, maxText, maxText)
		below, okD := planText(c.UserCode, c.ShortURI, clock, width, height-b, maxText, maxText)
		if !okB && !okD {
			continue
		}
		f := Fit{Width: width, Height: height, Version: qr.Version, Level: qr.Level,
			Modules: n, Scale: s, Quiet: q, qr: qr}
		var p textPlan
		var origin, qrAt image.Point
		if okB && (!okD || beside.codeScale >= below.codeScale) {
			p, f.Placement = beside, Beside
			qrAt = image.Pt(q*s, (height-b)/2+q*s)
			origin = image.Pt(b+(width-b-p.w)/2, (height-p.h)/2)
		} else {
			p, f.Placement = below, Below
			qrAt = image.Pt((width-b)/2+q*s, q*s)
			origin = image.Pt((width-p.w)/2, b+(height-b-p.h)/2)
		}
		f.Symbol = image.Rect(qrAt.X, qrAt.Y, qrAt.X+n*s, qrAt.Y+n*s)
		f.CodeScale, f.CodeLines, f.ShortURI, f.Countdown = p.codeScale, p.line, p.uri, p.clock
		for _, it := range p.items {
			it.x += origin.X
			it.y += origin.Y
			f.text = append(f.text, it)
		}
		return f, true
	}
	return Fit{}, false
}

// draw renders a computed fit.
func (f Fit) draw() *Frame {
	fr := NewFrame(f.Width, f.Height)
	for my := 0; my < f.Modules; my++ {
		for mx := 0; mx < f.Modules; mx++ {
			if f.qr.Dark(mx, my) {
				x, y := f.Symbol.Min.X+mx*f.Scale, f.Symbol.Min.Y+my*f.Scale
				fr.FillRect(image.Rect(x, y, x+f.Scale, y+f.Scale), true)
			}
		}
	}
	for _, it := range f.text {
		drawText(fr, it.x, it.y, it.s, it.scale)
	}
	return fr
}

// Pages lays the card out on a width×height panel like [Card.Layout] and
// returns the frame in SSD1306 page order ([Frame.Pages]): 1024 bytes for
// 128×64, 512 for 128×32, ready to be copied to the panel's RAM.
func (c Card) Pages(width, height int, opt LayoutOptions) ([]byte, Fit, error) {
	f, fit, err := c.Layout(width, height, opt)
	if err != nil {
		return nil, fit, err
	}
	b, err := f.Pages()
	return b, fit, err
}

// String summarises the fit, e.g. "v2-M 2px/module quiet 3 text beside".
func (f Fit) String() string {
	return fmt.Sprintf("v%d-%v %dpx/module quiet %d text %v", f.Version, f.Level, f.Scale, f.Quiet, f.Placement)
}
