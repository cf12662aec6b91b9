package bmcsim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// RedfishConfig describes one simulated Redfish BMC.
type RedfishConfig struct {
	// Listener, when set, is where it serves HTTPS (e.g. a socket the
	// test opened inside a network namespace); otherwise it listens on
	// Addr ("127.0.0.1:0" when empty).
	Listener net.Listener
	Addr     string
	// Username and Password are the one account; Username is "admin" when
	// empty. Password is required.
	Username, Password string
	// Systems maps each system's Id to its machine; one system "1" with a
	// MemoryMachine when empty.
	Systems map[string]Machine
}

// Redfish is a running Redfish service: ServiceRoot, Systems with
// ComputerSystem.Reset and a PATCH of Boot, SessionService with
// X-Auth-Token sessions, and HTTP basic authentication.
type Redfish struct {
	cfg      RedfishConfig
	ln       net.Listener
	srv      *http.Server
	actions  actionLog
	mu       sync.Mutex
	sessions map[string]string // token -> session id
	nextID   int
	boot     map[string]Boot
}

var (
	certOnce sync.Once
	cert     tls.Certificate
	certPool *x509.CertPool
	certErr  error
)

// testCert is one self-signed certificate for 127.0.0.1, ::1 and
// localhost, made once per process and shared by every service.
func testCert() (tls.Certificate, error) {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			certErr = err
			return
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "bmcsim"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			DNSNames:              []string{"localhost"},
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IsCA:                  true,
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			certErr = err
			return
		}
		leaf, _ := x509.ParseCertificate(der)
		cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		certPool = x509.NewCertPool()
		certPool.AddCert(leaf)
	})
	return cert, certErr
}

// CertPool trusts the services' self-signed certificate.
func CertPool() *x509.CertPool {
	_, _ = testCert()
	return certPool
}

// CertPEM is the services' self-signed certificate in PEM, for clients
// that read a CA file.
func CertPEM() []byte {
	if _, err := testCert(); err != nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Leaf.Raw})
}

// StartRedfish starts a Redfish service; it stops when ctx is done or on
// Stop.
func StartRedfish(ctx context.Context, cfg RedfishConfig) (*Redfish, error) {
	if cfg.Username == "" {
		cfg.Username = "admin"
	}
	if cfg.Password == "" {
		return nil, errors.New("redfish: Password is required")
	}
	if len(cfg.Systems) == 0 {
		cfg.Systems = map[string]Machine{"1": &MemoryMachine{}}
	}
	c, err := testCert()
	if err != nil {
		return nil, fmt.Errorf("make redfish certificate: %w", err)
	}
	ln := cfg.Listener
	if ln == nil {
		addr := cfg.Addr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("listen for redfish: %w", err)
		}
	}
	r := &Redfish{cfg: cfg, sessions: map[string]string{}, boot: map[string]Boot{}}
	for id := range cfg.Systems {
		r.boot[id] = Boot{Target: "None", Enabled: "Disabled", Mode: "Legacy"}
	}
	r.ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12})
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = r.srv.Serve(r.ln) }()
	go func() {
		<-ctx.Done()
		r.Stop()
	}()
	return r, nil
}

// Addr is the address the service listens on.
func (r *Redfish) Addr() net.Addr { return r.ln.Addr() }

// URL is the service's base URL, https://host:port.
func (r *Redfish) URL() string { return "https://" + r.ln.Addr().String() }

// Stop closes the listener and every connection.
func (r *Redfish) Stop() { _ = r.srv.Close() }

// Actions lists what the service did to its machines so far:
// "reset <ResetType>" and "boot <Target> <Enabled> <Mode>", prefixed with
// "<system id>: " when it serves more than one system.
func (r *Redfish) Actions() []Action { return r.actions.list() }

// Sessions is the number of open sessions.
func (r *Redfish) Sessions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

type object = map[string]any

func link(path string) object { return object{"@odata.id": path} }

// ServeHTTP routes a Redfish request.
func (r *Redfish) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("OData-Version", "4.0")
	path := strings.TrimSuffix(req.URL.Path, "/")
	switch path {
	case "/redfish":
		r.only(w, req, http.MethodGet, func() { writeJSON(w, http.StatusOK, object{"v1": "/redfish/v1/"}) })
		return
	case "/redfish/v1":
		r.only(w, req, http.MethodGet, func() { writeJSON(w, http.StatusOK, r.serviceRoot()) })
		return
	case "/redfish/v1/SessionService/Sessions":
		if req.Method == http.MethodPost {
			r.login(w, req)
			return
		}
	}
	if !r.authorized(req) {
		w.Header().Set("WWW-Authenticate", `Basic realm="bmcsim"`)
		writeError(w, http.StatusUnauthorized, "Base.1.8.InsufficientPrivilege", "the credentials were refused")
		return
	}
	switch {
	case path == "/redfish/v1/SessionService":
		r.only(w, req, http.MethodGet, func() {
			writeJSON(w, http.StatusOK, object{
				"@odata.id": path, "@odata.type": "#SessionService.v1_1_8.SessionService",
				"Id": "SessionService", "Name": "Session Service", "ServiceEnabled": true, "SessionTimeout": 1800,
				"Sessions": link(path + "/Sessions"),
			})
		})
	case path == "/redfish/v1/SessionService/Sessions":
		r.only(w, req, http.MethodGet, func() { writeJSON(w, http.StatusOK, r.sessionCollection()) })
	case strings.HasPrefix(path, "/redfish/v1/SessionService/Sessions/"):
		r.session(w, req, strings.TrimPrefix(path, "/redfish/v1/SessionService/Sessions/"))
	case path == "/redfish/v1/Systems":
		r.only(w, req, http.MethodGet, func() { writeJSON(w, http.StatusOK, r.systemCollection()) })
	case strings.HasPrefix(path, "/redfish/v1/Systems/"):
		rest := strings.TrimPrefix(path, "/redfish/v1/Systems/")
		id, action, _ := strings.Cut(rest, "/")
		m, ok := r.cfg.Systems[id]
		switch {
		case !ok:
			writeError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no system "+id)
		case action == "":
			r.system(w, req, id, m)
		case action == "Actions/ComputerSystem.Reset":
			r.only(w, req, http.MethodPost, func() { r.reset(w, req, id, m) })
		default:
			writeError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no resource "+path)
		}
	default:
		writeError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no resource "+path)
	}
}

// only runs f when req uses method, and answers 405 otherwise.
func (r *Redfish) only(w http.ResponseWriter, req *http.Request, method string, f func()) {
	if req.Method != method {
		w.Header().Set("Allow", method)
		writeError(w, http.StatusMethodNotAllowed, "Base.1.8.ActionNotSupported", req.Method+" is not supported here")
		return
	}
	f()
}

func (r *Redfish) serviceRoot() object {
	return object{
		"@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_11_0.ServiceRoot",
		"Id": "RootService", "Name": "bmcsim Redfish service", "RedfishVersion": "1.11.0",
		"UUID":           "92384634-2938-2342-8820-489239905423",
		"Product":        "bmcsim",
		"Systems":        link("/redfish/v1/Systems"),
		"SessionService": link("/redfish/v1/SessionService"),
		"Links":          object{"Sessions": link("/redfish/v1/SessionService/Sessions")},
	}
}

// authorized accepts a session token or HTTP basic authentication.
func (r *Redfish) authorized(req *http.Request) bool {
	if tok := req.Header.Get("X-Auth-Token"); tok != "" {
		r.mu.Lock()
		_, ok := r.sessions[tok]
		r.mu.Unlock()
		return ok
	}
	user, pass, ok := req.BasicAuth()
	return ok && r.credentialsOK(user, pass)
}

func (r *Redfish) credentialsOK(user, pass string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(r.cfg.Username))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(r.cfg.Password))
	return u&p == 1
}

func (r *Redfish) login(w http.ResponseWriter, req *http.Request) {
	var body struct{ UserName, Password string }
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "the request body is not JSON")
		return
	}
	if !r.credentialsOK(body.UserName, body.Password) {
		writeError(w, http.StatusUnauthorized, "Base.1.8.InsufficientPrivilege", "the credentials were refused")
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	r.mu.Lock()
	r.nextID++
	id := fmt.Sprint(r.nextID)
	r.sessions[tok] = id
	r.mu.Unlock()
	loc := "/redfish/v1/SessionService/Sessions/" + id
	w.Header().Set("X-Auth-Token", tok)
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusCreated, object{
		"@odata.id": loc, "@odata.type": "#Session.v1_3_0.Session", "Id": id, "Name": "User Session",
		"UserName": body.UserName,
	})
}

func (r *Redfish) sessionCollection() object {
	r.mu.Lock()
	ids := make([]string, 0, len(r.sessions))
	for _, id := range r.sessions {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	slices.Sort(ids)
	members := make([]object, len(ids))
	for i, id := range ids {
		members[i] = link("/redfish/v1/SessionService/Sessions/" + id)
	}
	return object{
		"@odata.id": "/redfish/v1/SessionService/Sessions", "@odata.type": "#SessionCollection.SessionCollection",
		"Name": "Sessions", "Members": members, "Members@odata.count": len(members),
	}
}

func (r *Redfish) session(w http.ResponseWriter, req *http.Request, id string) {
	r.mu.Lock()
	tok := ""
	for t, sid := range r.sessions {
		if sid == id {
			tok = t
		}
	}
	if tok != "" && req.Method == http.MethodDelete {
		delete(r.sessions, tok)
	}
	r.mu.Unlock()
	switch {
	case tok == "":
		writeError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no session "+id)
	case req.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	case req.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, object{
			"@odata.id": "/redfish/v1/SessionService/Sessions/" + id, "@odata.type": "#Session.v1_3_0.Session",
			"Id": id, "Name": "User Session", "UserName": r.cfg.Username,
		})
	default:
		writeError(w, http.StatusMethodNotAllowed, "Base.1.8.ActionNotSupported", req.Method+" is not supported here")
	}
}

func (r *Redfish) systemCollection() object {
	ids := make([]string, 0, len(r.cfg.Systems))
	for id := range r.cfg.Systems {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	members := make([]object, len(ids))
	for i, id := range ids {
		members[i] = link("/redfish/v1/Systems/" + id)
	}
	return object{
		"@odata.id": "/redfish/v1/Systems", "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
		"Name": "Computer System Collection", "Members": members, "Members@odata.count": len(members),
	}
}

func (r *Redfish) system(w http.ResponseWriter, req *http.Request, id string, m Machine) {
	switch req.Method {
	case http.MethodGet:
	case http.MethodPatch:
		if !r.patchBoot(w, req, id, m) {
			return
		}
	default:
		w.Header().Set("Allow", "GET, PATCH")
		writeError(w, http.StatusMethodNotAllowed, "Base.1.8.ActionNotSupported", req.Method+" is not supported here")
		return
	}
	on, err := m.PoweredOn(req.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Base.1.8.InternalError", err.Error())
		return
	}
	power := "Off"
	if on {
		power = "On"
	}
	r.mu.Lock()
	b := r.boot[id]
	r.mu.Unlock()
	path := "/redfish/v1/Systems/" + id
	writeJSON(w, http.StatusOK, object{
		"@odata.id": path, "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
		"Id": id, "Name": "System " + id, "SystemType": "Physical", "Manufacturer": "bmcsim", "Model": "simulated",
		"PowerState": power,
		"Status":     object{"State": "Enabled", "Health": "OK"},
		"Boot": object{
			"BootSourceOverrideTarget":                          b.Target,
			"BootSourceOverrideTarget@Redfish.AllowableValues":  bootTargets,
			"BootSourceOverrideEnabled":                         b.Enabled,
			"BootSourceOverrideEnabled@Redfish.AllowableValues": bootEnabled,
			"BootSourceOverrideMode":                            b.Mode,
			"BootSourceOverrideMode@Redfish.AllowableValues":    bootModes,
		},
		"Actions": object{"#ComputerSystem.Reset": object{
			"target":                            path + "/Actions/ComputerSystem.Reset",
			"ResetType@Redfish.AllowableValues": resetTypes,
		}},
	})
}

// patchBoot applies a PATCH of Boot; other properties are ignored. It
// answers the request itself when it returns false.
func (r *Redfish) patchBoot(w http.ResponseWriter, req *http.Request, id string, m Machine) bool {
	var body struct {
		Boot *struct {
			BootSourceOverrideTarget, BootSourceOverrideEnabled, BootSourceOverrideMode string
		}
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "the request body is not JSON")
		return false
	}
	if body.Boot == nil {
		return true
	}
	r.mu.Lock()
	b := r.boot[id]
	r.mu.Unlock()
	for _, p := range []struct {
		name, value string
		allowed     []string
		field       *string
	}{
		{"BootSourceOverrideTarget", body.Boot.BootSourceOverrideTarget, bootTargets, &b.Target},
		{"BootSourceOverrideEnabled", body.Boot.BootSourceOverrideEnabled, bootEnabled, &b.Enabled},
		{"BootSourceOverrideMode", body.Boot.BootSourceOverrideMode, bootModes, &b.Mode},
	} {
		if p.value == "" {
			continue
		}
		if !slices.Contains(p.allowed, p.value) {
			writeError(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList",
				fmt.Sprintf("%s %q is not one of %v", p.name, p.value, p.allowed))
			return false
		}
		*p.field = p.value
	}
	if err := m.SetBoot(req.Context(), b); err != nil {
		writeError(w, http.StatusInternalServerError, "Base.1.8.InternalError", err.Error())
		return false
	}
	r.mu.Lock()
	r.boot[id] = b
	r.mu.Unlock()
	r.actions.add(r.prefix(id) + "boot " + b.Target + " " + b.Enabled + " " + b.Mode)
	return true
}

func (r *Redfish) prefix(id string) string {
	if len(r.cfg.Systems) == 1 {
		return ""
	}
	return id + ": "
}

func (r *Redfish) reset(w http.ResponseWriter, req *http.Request, id string, m Machine) {
	var body struct{ ResetType string }
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "the request body is not JSON")
		return
	}
	if !slices.Contains(resetTypes, body.ResetType) {
		writeError(w, http.StatusBadRequest, "Base.1.8.ActionParameterNotSupported",
			fmt.Sprintf("ResetType %q is not one of %v", body.ResetType, resetTypes))
		return
	}
	wasOn, err := m.PoweredOn(req.Context())
	if err == nil {
		err = m.Reset(req.Context(), body.ResetType)
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Base.1.8.InternalError", err.Error())
		return
	}
	r.actions.add(r.prefix(id) + "reset " + body.ResetType)
	// A boot (power on, restart) uses up a one-time override.
	boots := body.ResetType != ResetForceOff && body.ResetType != ResetGracefulShutdown &&
		!(body.ResetType == ResetOn && wasOn)
	r.mu.Lock()
	if b := r.boot[id]; boots && b.Enabled == "Once" {
		b.Enabled = "Disabled"
		r.boot[id] = b
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, id, msg string) {
	writeJSON(w, code, object{"error": object{
		"code": id, "message": msg,
		"@Message.ExtendedInfo": []object{{"MessageId": id, "Message": msg}},
	}})
}
