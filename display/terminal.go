package display

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// TermMode selects how blocks are drawn on a text terminal.
type TermMode int

// Terminal modes. Every mode draws two pixels per character cell with the
// half blocks ▀ ▄ █ and space, so a QR module is one column wide and half a
// line high: square on common fonts.
const (
	// TermAuto is TermColor when writing to a terminal and the NO_COLOR
	// environment variable is empty, TermPlain otherwise ([TermModeFor]).
	TermAuto TermMode = iota
	// TermColor wraps the symbol in explicit colours, black on white from
	// the fixed part of the 256-colour palette (entries 16 and 231, which
	// themes do not remap), so it scans on dark and light themes alike.
	TermColor
	// TermPlain uses no escape sequences and draws the LIGHT modules and
	// the quiet zone as blocks: on the usual light-on-dark terminal the
	// symbol then appears dark on light, as printed. On a light theme it
	// appears inverted, which many phone scanners also read, but not all.
	TermPlain
	// TermPlainInk uses no escape sequences and draws the DARK modules as
	// blocks: for dark-on-light output such as a light-theme terminal, a
	// printed log or a web page showing plain text.
	TermPlainInk
)

// String names the mode.
func (m TermMode) String() string {
	switch m {
	case TermColor:
		return "color"
	case TermPlain:
		return "plain"
	case TermPlainInk:
		return "plain-ink"
	}
	return "auto"
}

// SGR sequences of TermColor: foreground black (16), background white (231).
const (
	sgrCard  = "\x1b[38;5;16;48;5;231m"
	sgrReset = "\x1b[0m"
)

// TermModeFor resolves [TermAuto] for w: TermColor if w is an *os.File
// that is a character device (a terminal) and NO_COLOR is unset or empty,
// TermPlain otherwise.
func TermModeFor(w io.Writer) TermMode {
	if os.Getenv("NO_COLOR") == "" && isTerminal(w) {
		return TermColor
	}
	return TermPlain
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// WriteHalfBlocks draws f on a terminal, two pixel rows per text line,
// ink as dark (see [TermMode] for what each mode does with dark and
// light). TermAuto is resolved with [TermModeFor]. An odd last row is
// padded with a light row.
func WriteHalfBlocks(w io.Writer, f *Frame, mode TermMode) error {
	if mode == TermAuto {
		mode = TermModeFor(w)
	}
	bw := bufio.NewWriter(w)
	for y := 0; y < f.Height; y += 2 {
		if mode == TermColor {
			bw.WriteString(sgrCard)
		}
		for x := 0; x < f.Width; x++ {
			top, bot := f.Ink(x, y), y+1 < f.Height && f.Ink(x, y+1)
			if mode == TermPlain { // blocks are light
				top, bot = !top, !bot
				if y+1 >= f.Height {
					bot = false
				}
			}
			bw.WriteString(halfBlock(top, bot))
		}
		if mode == TermColor {
			bw.WriteString(sgrReset)
		}
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("display: writing terminal: %w", err)
	}
	return nil
}

// halfBlock returns the character with the given halves drawn (in the
// foreground colour).
func halfBlock(top, bot bool) string {
	switch {
	case top && bot:
		return "█"
	case top:
		return "▀"
	case bot:
		return "▄"
	}
	return " "
}

// TermOptions tune [Card.WriteTerminal] and [Card.Live]. The zero value
// writes to an 80-column screen in the mode [TermModeFor] picks.
type TermOptions struct {
	Mode TermMode
	// Columns is the width of the screen; zero means 80. The user code is
	// drawn twice as large when it fits.
	Columns int
	// Level is the error-correction level; zero means M (smaller symbols
	// fit more screens).
	Level Level
	// Now returns the current time for the countdown; nil means time.Now.
	Now func() time.Time
	// Redraw says how [Card.Live] updates the countdown.
	Redraw Redraw
	// Tick is how often Card.Live looks at the clock; zero means 1 s.
	Tick time.Duration
}

func (o TermOptions) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// TermFit lays the symbol out for a terminal: one column per module, a
// 4-module quiet zone if the screen is wide enough, else down to 2. It
// fails with [ErrTooLong] if even that is wider than the screen.
func (c Card) TermFit(opt TermOptions) (Fit, error) {
	cols := opt.Columns
	if cols <= 0 {
		cols = 80
	}
	if c.URI == "" {
		return Fit{}, fmt.Errorf("display: card has no URI")
	}
	qr, err := EncodeQR(c.URI, opt.Level)
	if err != nil {
		return Fit{}, err
	}
	n := qr.Size
	q := min(4, (cols-n)/2)
	if q < 2 {
		return Fit{}, fmt.Errorf("%w: a %d-module symbol on %d columns", ErrTooLong, n, cols)
	}
	b := n + 2*q
	return Fit{Width: b, Height: b, Version: qr.Version, Level: qr.Level, Modules: n,
		Scale: 1, Quiet: q, Symbol: rectAt(q, q, n), Placement: Below, qr: qr}, nil
}

// WriteTerminal writes the card for a text terminal: the symbol, the short
// URI, the user code in block letters (5×7 pixels per letter, twice that
// when the screen has room) and in plain text, and the countdown as the
// last line, without a final newline so that [Card.Live] can redraw it.
// If the card has no expiry there is no countdown and the output ends
// with a newline.
func (c Card) WriteTerminal(w io.Writer, opt TermOptions) error {
	fit, err := c.TermFit(opt)
	if err != nil {
		return err
	}
	mode := opt.Mode
	if mode == TermAuto {
		mode = TermModeFor(w)
	}
	if err := WriteHalfBlocks(w, fit.draw(), mode); err != nil {
		return err
	}
	var sb strings.Builder
	sb.WriteString("\n")
	if c.ShortURI != "" {
		fmt.Fprintf(&sb, "  Scan the code, or open %s\n  and enter this code:\n\n", c.ShortURI)
	} else {
		sb.WriteString("  Scan the code and check that it shows this code:\n\n")
	}
	if c.UserCode != "" {
		cols := opt.Columns
		if cols <= 0 {
			cols = 80
		}
		s := 1
		if textWidth(c.UserCode, 2)+2 <= cols {
			s = 2
		}
		big := NewFrame(textWidth(c.UserCode, s), textHeight(s)+1)
		drawText(big, 0, 0, c.UserCode, s)
		for y := 0; y < big.Height; y += 2 {
			line := "  "
			for x := 0; x < big.Width; x++ {
				line += halfBlock(big.Ink(x, y), big.Ink(x, y+1))
			}
			sb.WriteString(strings.TrimRight(line, " ") + "\n")
		}
		fmt.Fprintf(&sb, "\n  %s\n", c.UserCode)
	}
	if line := c.Countdown(opt.now()); line != "" {
		fmt.Fprintf(&sb, "\n  %s", line)
	}
	if _, err := io.WriteString(w, sb.String()); err != nil {
		return fmt.Errorf("display: writing terminal: %w", err)
	}
	return nil
}
