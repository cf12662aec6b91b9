package store_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/carbide-dev/carbide/ent/lease"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestAddressNum checks that leases.address_num follows address: set by
// every ent write, and filled in when the store opens for leases written
// without it (before the column existed).
func TestAddressNum(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"postgres", "embedded"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := store.Config{DataDir: t.TempDir()}
			if kind == "postgres" {
				cfg.DatabaseURL = pgtest.Database(t)
			}
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			st, err := store.Open(ctx, cfg, logger)
			if err != nil {
				t.Fatal(err)
			}
			seg, err := st.Client.Segment.Create().SetName("s").SetPrefix("10.0.0.0/8").Save(ctx)
			if err != nil {
				t.Fatal(err)
			}
			now := store.Now()
			l, err := st.Client.Lease.Create().SetSegmentID(seg.ID).SetMAC("02:00:00:00:00:01").
				SetAddress("10.1.2.3").SetExpireTime(now.Add(time.Hour)).Save(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(10<<24 | 1<<16 | 2<<8 | 3); l.AddressNum != want {
				t.Errorf("created lease on 10.1.2.3: address_num %d, want %d", l.AddressNum, want)
			}
			l, err = st.Client.Lease.UpdateOne(l).SetAddress("10.255.0.9").Save(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(10<<24 | 255<<16 | 9); l.AddressNum != want {
				t.Errorf("lease moved to 10.255.0.9: address_num %d, want %d", l.AddressNum, want)
			}
			// Written as before the column existed.
			if _, err := st.DB().ExecContext(ctx, st.SQL(`INSERT INTO leases (segment_id, mac, address, reserved, create_time, renew_time, expire_time)
				VALUES ($1, '02:00:00:00:00:02', '192.168.200.1', false, $2, $2, $3)`), seg.ID, now, now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			st.Close()
			if st, err = store.Open(ctx, cfg, logger); err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			old, err := st.Client.Lease.Query().Where(lease.MAC("02:00:00:00:00:02")).Only(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(192<<24 | 168<<16 | 200<<8 | 1); old.AddressNum != want {
				t.Errorf("older lease on 192.168.200.1 after reopening: address_num %d, want %d", old.AddressNum, want)
			}
		})
	}
}
