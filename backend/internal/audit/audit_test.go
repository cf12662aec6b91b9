package audit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"github.com/carbide-dev/carbide/backend/internal/store"
	"github.com/carbide-dev/carbide/backend/pgtest"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/auditrecord"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/prometheus/client_golang/prometheus"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestRecordPaths drives the interceptor with handlers that take each path
// a call's record can take, on both stores, and reads the records back.
func TestRecordPaths(t *testing.T) {
	t.Parallel()
	errFailed := connect.NewError(connect.CodeFailedPrecondition, errors.New("refused after the commit"))
	// record writes a change of machine id in a transaction.
	record := func(st *store.Store, id string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			return st.InTx(ctx, func(tx *ent.Tx) error {
				return st.RecordChange(ctx, tx, store.KindMachine, store.Updated, id, &machinev1.Machine{Id: id})
			})
		}
	}
	// empty commits a transaction that records no change.
	empty := func(st *store.Store) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			return st.InTx(ctx, func(*ent.Tx) error { return nil })
		}
	}
	tests := map[string]struct {
		// handle is the handler's work; its error, if any, is the call's.
		handle func(ctx context.Context, st *store.Store) error
		// respID is the id the response names ("" for none).
		respID string
		want   []rec // nil for no record
	}{
		"a change": {
			handle: func(ctx context.Context, st *store.Store) error { return record(st, "m1")(ctx) },
			respID: "m1",
			want:   []rec{{code: "ok", ids: []string{"req", "m1"}}},
		},
		"a change, then a failure": {
			handle: func(ctx context.Context, st *store.Store) error {
				if err := record(st, "m1")(ctx); err != nil {
					return err
				}
				return errFailed
			},
			want: []rec{{code: "failed_precondition", ids: []string{"req", "m1"}}},
		},
		"a transaction rolled back, then a change": {
			handle: func(ctx context.Context, st *store.Store) error {
				err := st.InTx(ctx, func(tx *ent.Tx) error {
					if err := st.RecordChange(ctx, tx, store.KindMachine, store.Updated, "m0", &machinev1.Machine{}); err != nil {
						return err
					}
					return errors.New("lost a race")
				})
				if err == nil {
					return errors.New("the transaction committed")
				}
				return record(st, "m2")(ctx)
			},
			want: []rec{{code: "ok", ids: []string{"req", "m2"}}},
		},
		"two changes": {
			handle: func(ctx context.Context, st *store.Store) error {
				if err := record(st, "m1")(ctx); err != nil {
					return err
				}
				return record(st, "m2")(ctx)
			},
			want: []rec{{code: "ok", ids: []string{"req", "m1"}}},
		},
		"a change named by the handler": {
			handle: func(ctx context.Context, st *store.Store) error {
				if err := record(st, "m1")(ctx); err != nil {
					return err
				}
				if err := record(st, "m2")(ctx); err != nil {
					return err
				}
				Resources(ctx, []string{"m1", "m2"})
				return nil
			},
			want: []rec{{code: "ok", ids: []string{"m1", "m2"}}},
		},
		"a transaction without change-log entries": {
			handle: func(ctx context.Context, st *store.Store) error { return empty(st)(ctx) },
			respID: "r1",
			want:   []rec{{code: "ok", ids: []string{"req", "r1"}}},
		},
		"a transaction, then unchanged": {
			handle: func(ctx context.Context, st *store.Store) error {
				Unchanged(ctx)
				return empty(st)(ctx)
			},
		},
		"no transaction, unchanged": {
			handle: func(ctx context.Context, _ *store.Store) error { Unchanged(ctx); return nil },
		},
		"no transaction": {
			handle: func(context.Context, *store.Store) error { return nil },
			respID: "r1",
			want:   []rec{{code: "ok", ids: []string{"req", "r1"}}},
		},
		"shed for overload": {
			handle: func(ctx context.Context, _ *store.Store) error {
				Shed(ctx)
				return connect.NewError(connect.CodeResourceExhausted, errors.New("overloaded"))
			},
		},
		"a change, then shed": {
			handle: func(ctx context.Context, st *store.Store) error {
				if err := record(st, "m1")(ctx); err != nil {
					return err
				}
				Shed(ctx)
				return connect.NewError(connect.CodeResourceExhausted, errors.New("overloaded"))
			},
			want: []rec{{code: "resource_exhausted", ids: []string{"req", "m1"}}},
		},
		"a failure inside a transaction": {
			handle: func(ctx context.Context, st *store.Store) error {
				return st.InTx(ctx, func(*ent.Tx) error { return errFailed })
			},
			want: []rec{{code: "failed_precondition", ids: []string{"req"}}},
		},
	}
	for _, kind := range []string{"postgres", "embedded"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			for name, tc := range tests {
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					st := openStore(t, kind)
					call := Interceptor(st, slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(prometheus.NewRegistry())).
						WrapUnary(func(ctx context.Context, _ connect.AnyRequest) (connect.AnyResponse, error) {
							if err := tc.handle(ctx, st); err != nil {
								return nil, err
							}
							resp := &machinev1.GetMachineResponse{}
							if tc.respID != "" {
								resp.Machine = &machinev1.Machine{Id: tc.respID}
							}
							return connect.NewResponse(resp), nil
						})
					_, _ = call(t.Context(), connect.NewRequest(&machinev1.GetMachineRequest{Id: "req"}))
					got := records(t, st)
					if !slices.EqualFunc(got, tc.want, func(a, b rec) bool { return a.code == b.code && slices.Equal(a.ids, b.ids) }) {
						t.Errorf("records %v, want %v", got, tc.want)
					}
				})
			}
		})
	}
}

// rec is what a test checks of an audit record.
type rec struct {
	code string
	ids  []string
}

func records(t *testing.T, st *store.Store) []rec {
	t.Helper()
	rs, err := st.Client.AuditRecord.Query().Order(ent.Asc(auditrecord.FieldID)).All(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []rec
	for _, r := range rs {
		out = append(out, rec{code: r.Code, ids: r.ResourceIds})
	}
	return out
}

func openStore(t *testing.T, kind string) *store.Store {
	t.Helper()
	cfg := store.Config{DataDir: t.TempDir()}
	if kind == "postgres" {
		cfg.DatabaseURL = pgtest.Database(t)
	}
	st, err := store.Open(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("open %s store: %v", kind, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
