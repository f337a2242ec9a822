package devicegrant

import "context"

// CleanupLeased is the cleanup as Run has it done, for tests of instances
// sharing a database: only if this instance takes the cleanup lease; ran
// tells whether it did.
func (s *Server) CleanupLeased(ctx context.Context) (n int64, ran bool, err error) {
	return s.cleanup(ctx, true)
}
