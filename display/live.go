package display

import (
	"context"
	"fmt"
	"image"
	"io"
	"time"
)

// Redraw says how [Card.Live] updates the countdown line.
type Redraw int

// Redraw modes.
const (
	// RedrawAuto is RedrawInPlace when w is a terminal, else RedrawAppend.
	RedrawAuto Redraw = iota
	// RedrawInPlace rewrites the last line with a carriage return and the
	// ANSI "erase to end of line" sequence (ESC [ K), once per second.
	RedrawInPlace
	// RedrawAppend writes no escape sequences: it appends a new countdown
	// line each time the minute changes, and a final "expired" line.
	RedrawAppend
)

// Live writes the card with [Card.WriteTerminal] and keeps the countdown
// current until ctx is done (it returns ctx's error) or the card expires
// (it writes "expired" and returns nil). A card without expiry is written
// once and Live returns at once. The output always ends with a newline.
func (c Card) Live(ctx context.Context, w io.Writer, opt TermOptions) error {
	if err := c.WriteTerminal(w, opt); err != nil {
		return err
	}
	if c.Expires.IsZero() {
		return nil
	}
	redraw := opt.Redraw
	if redraw == RedrawAuto {
		redraw = RedrawAppend
		if isTerminal(w) {
			redraw = RedrawInPlace
		}
	}
	tick := opt.Tick
	if tick <= 0 {
		tick = time.Second
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	now := opt.now()
	last, lastMin := c.Countdown(now), c.Remaining(now)/time.Minute
	for {
		if c.Remaining(now) == 0 {
			_, err := io.WriteString(w, "\n")
			if err == nil && redraw == RedrawAppend && last != "expired" {
				_, err = io.WriteString(w, "  expired\n")
			}
			return wrapWrite(err)
		}
		select {
		case <-ctx.Done():
			if _, err := io.WriteString(w, "\n"); err != nil {
				return wrapWrite(err)
			}
			return ctx.Err()
		case <-t.C:
		}
		now = opt.now()
		line := c.Countdown(now)
		var err error
		switch {
		case line == last:
		case redraw == RedrawInPlace:
			_, err = fmt.Fprintf(w, "\r\x1b[K  %s", line)
			last = line
		case c.Remaining(now)/time.Minute != lastMin && line != "expired":
			_, err = fmt.Fprintf(w, "\n  %s", line)
			last, lastMin = line, c.Remaining(now)/time.Minute
		}
		if err != nil {
			return wrapWrite(err)
		}
	}
}

func wrapWrite(err error) error {
	if err != nil {
		return fmt.Errorf("display: writing terminal: %w", err)
	}
	return nil
}

// rectAt is the square of side n modules (or pixels) at (x, y).
func rectAt(x, y, n int) image.Rectangle { return image.Rect(x, y, x+n, y+n) }
