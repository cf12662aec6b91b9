package apiserver

import (
	"net/http"
	"net/http/pprof"
)

// withProfiles serves Go's runtime profiles (net/http/pprof) under
// /debug/pprof/, within the request limits like any call, and every other
// request with next: the index, the named profiles (heap, goroutine,
// mutex, block, ...), a CPU profile (profile?seconds=N, shorter than
// --write-timeout), an execution trace (trace?seconds=N) and the symbol
// lookup of go tool pprof. Not the command line (cmdline): flags such as
// --database-url can carry secrets.
func withProfiles(next http.Handler, lim *limits) http.Handler {
	profiles := http.NewServeMux()
	profiles.HandleFunc("GET /debug/pprof/", pprof.Index)
	profiles.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	profiles.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	profiles.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	profiles.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	profiles.HandleFunc("GET /debug/pprof/cmdline", http.NotFound)
	mux := http.NewServeMux()
	mux.Handle("/debug/pprof/", lim.Middleware(profiles))
	mux.Handle("/", next)
	return mux
}
