package display

import (
	"errors"
	"fmt"

	qrcode "github.com/skip2/go-qrcode"
)

// Level is a QR error-correction level. The zero value means [LevelM].
type Level int

// The four QR error-correction levels, from the least to the most redundant.
// A level recovers roughly 7 %, 15 %, 25 % and 30 % of damaged codewords.
const (
	LevelL Level = iota + 1
	LevelM
	LevelQ
	LevelH
)

// String returns "L", "M", "Q" or "H".
func (l Level) String() string {
	switch l.norm() {
	case LevelL:
		return "L"
	case LevelQ:
		return "Q"
	case LevelH:
		return "H"
	default:
		return "M"
	}
}

func (l Level) norm() Level {
	if l < LevelL || l > LevelH {
		return LevelM
	}
	return l
}

func (l Level) skip2() qrcode.RecoveryLevel {
	switch l.norm() {
	case LevelL:
		return qrcode.Low
	case LevelQ:
		return qrcode.High
	case LevelH:
		return qrcode.Highest
	default:
		return qrcode.Medium
	}
}

// ErrTooLong is returned (wrapped) when content does not fit in any QR version
// at the requested level, or a card does not fit on a surface.
var ErrTooLong = errors.New("display: content does not fit")

// QR is an encoded QR symbol without quiet zone. The zero value is an empty
// symbol of size 0.
type QR struct {
	// Version is the QR version, 1 to 40; the symbol is 17+4×Version modules wide.
	Version int
	// Level is the error-correction level used.
	Level Level
	// Size is the width and height in modules.
	Size int
	// dark holds Size×Size modules, row-major, true for a dark module.
	dark []bool
}

// EncodeQR encodes content in the smallest QR version that holds it at level.
// Content made only of QR alphanumeric characters (0-9 A-Z space $%*+-./:) is
// encoded in alphanumeric mode, which is why upper-case URIs give smaller
// symbols (see PROTOCOL.md rule P-DEV-8).
func EncodeQR(content string, level Level) (*QR, error) {
	if content == "" {
		return nil, errors.New("display: empty QR content")
	}
	level = level.norm()
	q, err := qrcode.New(content, level.skip2())
	if err != nil {
		return nil, fmt.Errorf("%w: QR level %v: %w", ErrTooLong, level, err)
	}
	q.DisableBorder = true
	bm := q.Bitmap()
	n := len(bm)
	out := &QR{Version: q.VersionNumber, Level: level, Size: n, dark: make([]bool, n*n)}
	for y, row := range bm {
		if len(row) != n {
			return nil, fmt.Errorf("display: QR encoder returned a %d×%d bitmap", len(row), n)
		}
		copy(out.dark[y*n:], row)
	}
	return out, nil
}

// Dark reports whether module (x, y) is dark. Modules outside the symbol
// (the quiet zone and beyond) are light.
func (q *QR) Dark(x, y int) bool {
	if q == nil || x < 0 || y < 0 || x >= q.Size || y >= q.Size {
		return false
	}
	return q.dark[y*q.Size+x]
}
