package qrtest

import (
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/display"
)

func TestDecodeTerminal(t *testing.T) {
	const uri = "HTTP://127.0.0.1:8080/D/BCDFGHJK"
	card := display.Card{URI: uri, UserCode: "BCDF-GHJK", ShortURI: "http://127.0.0.1:8080/device",
		Expires: time.Now().Add(time.Minute)}
	for _, tc := range []struct {
		mode display.TermMode
		th   Theme
	}{
		{display.TermColor, DarkTheme}, {display.TermColor, LightTheme},
		{display.TermPlain, DarkTheme}, {display.TermPlainInk, LightTheme},
	} {
		var b strings.Builder
		if err := card.WriteTerminal(&b, display.TermOptions{Mode: tc.mode}); err != nil {
			t.Fatal(err)
		}
		got, err := DecodeTerminal(b.String(), tc.th)
		if err != nil || got != uri {
			t.Errorf("%v: got %q, %v", tc.mode, got, err)
		}
	}
	// tmux writes colours in its own words: separate 256-colour sequences
	// and default-colour resets.
	var b strings.Builder
	card.WriteTerminal(&b, display.TermOptions{Mode: display.TermColor})
	tmuxish := strings.NewReplacer("\x1b[38;5;16;48;5;231m", "\x1b[38;5;16m\x1b[48;5;231m", "\x1b[0m", "\x1b[39m\x1b[49m").Replace(b.String())
	if got, err := DecodeTerminal(tmuxish, DarkTheme); err != nil || got != uri {
		t.Errorf("tmux-style SGR: got %q, %v", got, err)
	}
	if _, err := ParseTerminal("a\x1b[2Jb", DarkTheme); err == nil {
		t.Error("an erase-screen sequence was accepted")
	}
}
