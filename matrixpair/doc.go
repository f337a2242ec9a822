// Package matrixpair signs a headless device or bot in to Matrix with the
// OAuth 2.0 device authorization grant (RFC 8628, Matrix spec v1.18) and
// keeps its tokens fresh. It works with any homeserver whose authorization
// server speaks the Matrix OAuth 2.0 API with the device grant, such as
// devicegrantd and matrix-authentication-service (MAS).
//
// The path of a login is:
//
//	hs, err := matrixpair.Discover(ctx, "@alice:example.org")
//	sess, err := matrixpair.Login(ctx, matrixpair.LoginOptions{
//		Homeserver: hs,
//		Show: func(a matrixpair.Authorization) { fmt.Println(a.VerificationURIComplete, a.UserCode) },
//	})
//
// and afterwards, in the bot:
//
//	sess, err := matrixpair.Load("default")
//	client := sess.Client(ctx) // an *http.Client that adds a fresh access token
//
// A [Session] is persisted as one JSON file per profile under
// $XDG_STATE_HOME/matrix-pair/ (default ~/.local/state/matrix-pair/), the
// same files the matrix-pair command uses. [Session.TokenSource] refreshes
// the access token when it is about to expire, under a file lock, so that
// processes sharing a profile never refresh twice, and writes the rotated
// tokens to disk before handing them out.
//
// HTTP requests use the *http.Client stored in the context under
// [golang.org/x/oauth2.HTTPClient], as in golang.org/x/oauth2, or
// http.DefaultClient. Logs go to the *slog.Logger given in the options, or
// nowhere; tokens are never logged.
package matrixpair
