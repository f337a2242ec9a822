package devicegrant_test

import (
	"os"
	"testing"

	"github.com/gin-gonic/gin"
)

// TestMain keeps gin quiet: in its default debug mode every server a test
// starts prints each of its routes, which buries a failure's own output.
func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}
