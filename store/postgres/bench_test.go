package postgres_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/postgres"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// BenchmarkUpdate compares the backends' write transactions from
// concurrent callers: each creating a row of its own, and each bumping
// the one token-epoch row (the worst case for SERIALIZABLE, where
// PostgreSQL aborts all but one of the transactions that overlap).
//
//	go test -run '^$' -bench Update -cpu 1,8 ./store/postgres/
func BenchmarkUpdate(b *testing.B) {
	ctx := context.Background()
	backends := map[string]func(b *testing.B) store.Store{
		"sqlite": func(b *testing.B) store.Store {
			s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "b.db"))
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
		"postgres": func(b *testing.B) store.Store {
			s, err := postgres.Open(ctx, freshSchema(b))
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
	}
	for _, backend := range []string{"sqlite", "postgres"} {
		for _, load := range []string{"own-row", "hot-row"} {
			b.Run(backend+"/"+load, func(b *testing.B) {
				s := backends[backend](b)
				defer s.Close()
				var n atomic.Int64
				b.SetParallelism(4)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := n.Add(1)
						err := s.Update(ctx, func(tx store.Tx) error {
							if load == "hot-row" {
								return tx.BumpTokenEpoch(ctx)
							}
							return tx.CreateUser(ctx, store.User{ID: fmt.Sprint("u", i), Username: fmt.Sprint("user", i),
								PasswordHash: "x", CreatedAt: time.Now()})
						})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
				if p, ok := s.(*postgres.Store); ok {
					b.ReportMetric(float64(p.Retries())/float64(b.N), "retries/op")
				}
			})
		}
	}
}
