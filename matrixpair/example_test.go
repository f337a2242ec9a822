package matrixpair_test

import (
	"context"
	"fmt"
	"io"
	"log"

	"github.com/devicegrant/devicegrant/matrixpair"
)

// A bot loads the session saved by "matrix-pair login" and calls the
// homeserver with an HTTP client that adds a fresh access token.
func ExampleSession_Client() {
	ctx := context.Background()
	sess, err := matrixpair.Load("default")
	if err != nil {
		log.Fatal(err) // errors.Is(err, matrixpair.ErrNotLoggedIn) before the first login
	}
	client := sess.Client(ctx)
	resp, err := client.Get(sess.Homeserver + "/_matrix/client/v3/account/whoami")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, string(body))
}

// A device signs in, showing the codes however it can.
func ExampleLogin() {
	ctx := context.Background()
	hs, err := matrixpair.Discover(ctx, "@mybot:example.org")
	if err != nil {
		log.Fatal(err)
	}
	sess, err := matrixpair.Login(ctx, matrixpair.LoginOptions{
		Homeserver: hs,
		Show: func(a matrixpair.Authorization) {
			fmt.Printf("Open %s and enter %s (until %s)\n", a.VerificationURI, a.UserCode, a.Expires.Format("15:04"))
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("signed in as", sess.UserID, "device", sess.DeviceID)
}
