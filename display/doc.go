// Package display draws pairing cards for browserless devices: a QR symbol
// of the RFC 8628 verification_uri_complete, the user code in large letters
// (RFC 8628 §3.3.1: the code is always shown, not only the symbol), the
// short verification_uri and the time left.
//
// The package knows nothing of OAuth: a [Card] is a URI, a code, a short URI
// and a deadline. It renders to
//
//   - text terminals ([Card.WriteTerminal], [Card.Live], [WriteHalfBlocks]),
//   - files: PNG, SVG and binary PBM ([Card.WritePNG], [Card.WriteSVG],
//     [Card.WritePBM]),
//   - monochrome panels of any size ([Card.Layout] gives a [Frame]), and raw
//     SSD1306/SH1106 page-order bytes ([Card.Pages], [Frame.Pages]).
//
// Drivers for real panels (SSD1306, SH1106, Waveshare e-paper, Linux
// framebuffer) live in the sub-package display/panel, so that importing
// display does not pull in periph.io.
//
// # Colours
//
// A [Frame] bit is ink: dark on paper and in PNG/PBM/SVG, an UNLIT pixel on
// an OLED. Panels therefore show dark modules on a lit background, the way
// QR symbols are specified; inverted symbols are not read by every scanner.
//
// # Fitting a panel
//
// [Card.Layout] chooses, in order: the largest whole number of pixels per
// module; at that scale the highest error-correction level (H, Q, M, L)
// whose symbol fits; then the widest quiet zone up to the 4 modules ISO/IEC
// 18004 asks for. Where 4 cannot fit (a version 2 symbol at 2 px/module on
// a 64-pixel-high panel) the quiet zone shrinks, never below 2 modules: the
// panel's black bezel is not part of the symbol, and phone scanners read a
// 2-module quiet zone reliably while a smaller symbol would cost more than
// the missing margin. The user code goes beside or below the symbol,
// whichever lets it be drawn larger, split at its dash onto two lines if
// that helps; the short URI (without its scheme if need be) and the clock
// follow when they fit. The font is a 5×7 bitmap font defined in this
// package.
//
// A QR-alphanumeric upper-case URI such as HTTPS://AUTH.EXAMPLE.ORG/D/BCDFGHJK
// is a version 2 symbol (25×25): on a 128×64 panel it is drawn at 2 px per
// module with a 3-module quiet zone and the code beside it; on 128×32 at 1 px
// per module, which decodes from a clean image but is marginal for a phone
// camera (see firmware-notes/fit-table.md).
//
// # Terminals
//
// With colours ([TermColor]) the symbol is wrapped in explicit black-on-white
// SGR sequences so that it scans on dark and light themes. Without colours
// (NO_COLOR set, or output not a terminal) nothing but text is written and
// the light modules are drawn as blocks ([TermPlain]), which is right for the
// usual light-on-dark terminal; [TermPlainInk] draws the dark modules instead
// for dark-on-light output.
package display
