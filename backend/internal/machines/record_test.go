package machines_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/change"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestRecordChangeConcurrent checks that two transactions that change one
// machine at once (each adds an interface) record copies in the order
// they commit, the later one including the earlier one's change: the
// second waits for the first at the machine's lock, and only there.
func TestRecordChangeConcurrent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), DatabaseURL: pgtest.Database(t)},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := st.Client.Machine.Create().Save(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addNIC := func(mac string) *ent.Tx {
		tx, err := st.Client.Tx(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.NIC.Create().SetMAC(mac).SetMachineID(m.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	first, second := addNIC("02:00:00:00:00:01"), addNIC("02:00:00:00:00:02")
	if err := machines.RecordChange(ctx, st, first, m.ID, store.Updated); err != nil {
		t.Fatal(err)
	}
	recorded := make(chan error, 1)
	go func() {
		err := machines.RecordChange(ctx, st, second, m.ID, store.Updated)
		if err == nil {
			err = second.Commit()
		}
		recorded <- err
	}()
	// The second waits for the first's lock on the machine.
	for waiting := 0; waiting == 0; {
		if err := st.DB().QueryRowContext(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'
			AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())`).Scan(&waiting); err != nil {
			t.Fatalf("the second transaction never waited for the first: %v", err)
		}
		select {
		case err := <-recorded:
			t.Fatalf("the second transaction recorded the machine while the first had it locked (error %v)", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := first.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-recorded; err != nil {
		t.Fatal(err)
	}

	rows, err := st.Client.Change.Query().Where(change.ResourceID(m.ID.String())).Order(ent.Asc(change.FieldID)).All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]string
	for _, r := range rows {
		pm := &machinev1.Machine{}
		if err := proto.Unmarshal(r.Payload, pm); err != nil {
			t.Fatal(err)
		}
		var macs []string
		for _, i := range pm.GetInterfaces() {
			macs = append(macs, i.GetMac())
		}
		slices.Sort(macs)
		got = append(got, macs)
	}
	want := [][]string{{"02:00:00:00:00:01"}, {"02:00:00:00:00:01", "02:00:00:00:00:02"}}
	if len(got) != len(want) || !slices.Equal(got[0], want[0]) || !slices.Equal(got[1], want[1]) {
		t.Errorf("interfaces of the recorded copies, in number order: %v, want %v", got, want)
	}
}
