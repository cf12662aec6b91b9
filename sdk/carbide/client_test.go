package carbide

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"connectrpc.com/connect"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
)

// pagedMachines serves ListMachines from a fixed list, page by page; the
// page token is the index of the next machine. A label filter "fail" makes
// the second page fail.
type pagedMachines struct {
	machinev1connect.UnimplementedMachineServiceHandler
	all []*machinev1.Machine
}

func (p *pagedMachines) ListMachines(_ context.Context, req *connect.Request[machinev1.ListMachinesRequest]) (*connect.Response[machinev1.ListMachinesResponse], error) {
	start := 0
	if tok := req.Msg.GetPageToken(); tok != "" {
		if req.Msg.GetLabels()["fail"] != "" {
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("second page unavailable"))
		}
		var err error
		if start, err = strconv.Atoi(tok); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		}
	}
	end := min(start+int(req.Msg.GetPageSize()), len(p.all))
	resp := &machinev1.ListMachinesResponse{Machines: p.all[start:end]}
	if end < len(p.all) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return connect.NewResponse(resp), nil
}

func TestAllMachines(t *testing.T) {
	t.Parallel()
	fake := &pagedMachines{}
	for i := range 7 {
		fake.all = append(fake.all, &machinev1.Machine{Id: fmt.Sprint(i)})
	}
	mux := http.NewServeMux()
	mux.Handle(machinev1connect.NewMachineServiceHandler(fake))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)

	for name, protocol := range map[string]Protocol{"connect": Connect, "grpc": GRPC, "grpcweb": GRPCWeb} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := New(srv.URL, WithProtocol(protocol))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			var ids []string
			for m, err := range c.AllMachines(context.Background(), &machinev1.ListMachinesRequest{PageSize: 3}) {
				if err != nil {
					t.Fatalf("AllMachines: %v", err)
				}
				ids = append(ids, m.GetId())
			}
			if fmt.Sprint(ids) != "[0 1 2 3 4 5 6]" {
				t.Errorf("AllMachines yielded %v, want machines 0 to 6 once each", ids)
			}

			var got []string
			var lastErr error
			req := &machinev1.ListMachinesRequest{PageSize: 3, Labels: map[string]string{"fail": "yes"}}
			for m, err := range c.AllMachines(context.Background(), req) {
				if err != nil {
					lastErr = err
					break
				}
				got = append(got, m.GetId())
			}
			if len(got) != 3 || connect.CodeOf(lastErr) != connect.CodeUnavailable {
				t.Errorf("with a failing second page: got %v then %v; want 3 machines then Unavailable", got, lastErr)
			}
			if req.GetPageToken() != "" {
				t.Errorf("AllMachines modified the caller's request")
			}
		})
	}
}
