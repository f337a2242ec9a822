// Package repocheck holds tests about the repository as a whole, not about
// one package: the import arrows between packages (boundaries_test.go) and
// docs/protocol.md covering every protocol rule id the code cites
// (protocol_test.go). It has no code of its own.
package repocheck
