// Package pgtest hands tests (and tools) a real PostgreSQL database.
//
// Tests call [Database] to get the URL of a fresh, empty database that is
// dropped when the test ends. By default the databases live on one throwaway
// PostgreSQL server ([Cluster]) that is started lazily in a temporary
// directory and shared by the whole test binary; a package that uses
// [Database] should stop it with [Main]:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// Setting CARBIDE_TEST_DATABASE_URL to a postgres:// URL makes [Database]
// create its databases on that server instead.
//
// The throwaway server listens on 127.0.0.1 with trust authentication, so
// other processes started by a test (for example an API server) can connect
// to the returned URLs too.
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// startTimeout bounds how long StartCluster waits for the server to
	// accept connections once it has been started.
	startTimeout = 30 * time.Second
	// stopTimeout bounds how long Stop waits after a fast shutdown request
	// before it kills the server.
	stopTimeout = 30 * time.Second
	// portAttempts is how often StartCluster retries when the free port it
	// picked was taken by someone else before the server could bind it.
	portAttempts = 5
	// maxSocketPath is the longest unix socket path PostgreSQL accepts
	// (sizeof(sun_path) - 1 on Linux).
	maxSocketPath = 107
)

// errPortInUse reports that the server could not bind its TCP port.
var errPortInUse = errors.New("port already in use")

// Cluster is a throwaway PostgreSQL server in a temporary directory.
//
// It listens on 127.0.0.1 on a free TCP port (and, when the path is short
// enough, on a unix socket in the temporary directory) and trusts every
// local connection. It is tuned for speed, not durability. Its methods are
// safe for concurrent use.
type Cluster struct {
	dir     string // temporary directory holding everything below
	dataDir string // PostgreSQL data directory
	logPath string // server stdout/stderr
	port    int

	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	waitErr error         // result of cmd.Wait, valid once exited is closed

	stopOnce sync.Once
	stopErr  error
}

// runAs is the user the server binaries run as when we are root.
type runAs struct {
	uid, gid uint32
}

// StartCluster creates a new PostgreSQL cluster in a temporary directory
// with initdb and starts a server on it, waiting until it accepts
// connections. ctx bounds the startup only; the server keeps running until
// [Cluster.Stop] is called. On Linux the server is killed when the calling
// process dies, but its temporary directory is then left behind.
//
// initdb and postgres refuse to run as root, so when the calling process is
// root they run as the "postgres" system user, which must exist.
//
// Each of settings is a server setting, name=value (as postgres -c takes
// it), applied after the speed settings, e.g.
// "shared_preload_libraries=pg_stat_statements".
func StartCluster(ctx context.Context, settings ...string) (*Cluster, error) {
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	as, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir, err := makeTempDir(as)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "postgres.log"),
	}
	if err := c.initdb(ctx, binDir, as); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err = c.start(ctx, binDir, as, settings)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, errPortInUse) || attempt == portAttempts {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
}

// URL returns the connection URL of database db on the cluster, for example
// postgres://postgres@127.0.0.1:5432/db?sslmode=disable.
func (c *Cluster) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates a fresh, uniquely named, empty database on the
// cluster and returns its URL. The database lives until the cluster is
// stopped.
func (c *Cluster) CreateDatabase(ctx context.Context) (string, error) {
	name, err := createDatabase(ctx, c.URL("postgres"))
	if err != nil {
		return "", err
	}
	return c.URL(name), nil
}

// Stop shuts the server down (fast shutdown: open sessions are
// disconnected), waits for it to exit and removes the temporary directory.
// It is safe to call more than once; later calls return the first result.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("signal postgres: %w", err))
		}
		select {
		case <-c.exited:
		case <-time.After(stopTimeout):
			if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				errs = append(errs, fmt.Errorf("kill postgres: %w", err))
			}
			<-c.exited
			errs = append(errs, fmt.Errorf("postgres did not shut down within %s and was killed", stopTimeout))
		}
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove cluster directory: %w", err))
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// initdb creates the cluster's data directory.
func (c *Cluster) initdb(ctx context.Context, binDir string, as *runAs) error {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"),
		"-D", c.dataDir,
		"-U", "postgres",
		"--auth=trust",
		"-E", "UTF8",
		"--no-locale",
		"--no-sync",
		"--no-instructions",
	)
	cmd.Dir = c.dir
	attr, err := sysProcAttr(as)
	if err != nil {
		return err
	}
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, tail(out))
	}
	return nil
}

// start starts the server on a free port and waits until it accepts
// connections. It returns an error wrapping errPortInUse if the port turned
// out to be taken. Each attempt overwrites the server log.
func (c *Cluster) start(ctx context.Context, binDir string, as *runAs, settings []string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	sockets := c.dir
	if len(filepath.Join(sockets, ".s.PGSQL."+strconv.Itoa(port))) > maxSocketPath {
		sockets = "" // TCP only; the socket path would be too long
	}
	logFile, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create server log: %w", err)
	}
	defer logFile.Close() // the child has its own copy

	args := []string{
		"-D", c.dataDir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + sockets,
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=300",
	}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	cmd := exec.Command(filepath.Join(binDir, "postgres"), args...)
	cmd.Dir = c.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	attr, err := sysProcAttr(as)
	if err != nil {
		return err
	}
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	c.port = port
	c.cmd = cmd
	c.exited = make(chan struct{})
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()

	err = c.waitReady(ctx)
	if err == nil {
		return nil
	}
	_ = cmd.Process.Kill()
	<-c.exited
	logTail := c.logTail()
	if strings.Contains(logTail, "could not create any TCP/IP sockets") {
		err = fmt.Errorf("%w: %w", errPortInUse, err)
	}
	return fmt.Errorf("%w\nserver log tail:\n%s", err, logTail)
}

// waitReady polls the server until it accepts connections, it exits, ctx is
// done or startTimeout has passed.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var lastErr error
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attemptCtx, c.URL("postgres"))
		cancelAttempt()
		if err == nil {
			return conn.Close(ctx)
		}
		lastErr = err
		select {
		case <-c.exited:
			return fmt.Errorf("postgres exited during startup: %v", c.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections on port %d: %w (last error: %v)", c.port, ctx.Err(), lastErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// logTail returns the last lines of the server log.
func (c *Cluster) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read server log: %v)", err)
	}
	return tail(b)
}

// tail returns the last 30 lines of b.
func tail(b []byte) string {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// createDatabase connects to adminURL, creates a new uniquely named database
// and returns its name.
func createDatabase(ctx context.Context, adminURL string) (string, error) {
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return "", fmt.Errorf("generate database name: %w", err)
	}
	name := "pgtest_" + hex.EncodeToString(suffix[:])
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connect to create database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return name, nil
}

// dropDatabase connects to adminURL and drops database name, disconnecting
// any sessions still using it.
func dropDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to drop database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// findBinDir returns the directory holding the initdb and postgres
// binaries: `pg_config --bindir`, else the directory of initdb on PATH, else
// the newest /usr/lib/postgresql/*/bin.
func findBinDir() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); has(dir) {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if dir := filepath.Dir(p); has(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { // newest major version first
		vi, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[i])), 64)
		vj, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[j])), 64)
		return vi > vj
	})
	for _, dir := range dirs {
		if has(dir) {
			return dir, nil
		}
	}
	return "", errors.New("postgresql server binaries (initdb, postgres) not found via pg_config --bindir, PATH or /usr/lib/postgresql/*/bin")
}

// serverUser returns the user to run initdb and postgres as: nil (the
// current user) unless we are root, in which case the postgres system user.
func serverUser() (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and postgres refuses to run as root, but there is no postgres user to run it as: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid of user postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid of user postgres: %w", err)
	}
	return &runAs{uid: uint32(uid), gid: uint32(gid)}, nil
}

// makeTempDir creates the cluster's temporary directory, owned by as if it
// is not nil. The directory's parents must then be traversable by as, so if
// os.TempDir() is not, /tmp is used instead.
func makeTempDir(as *runAs) (string, error) {
	base := os.TempDir()
	if as != nil && !worldTraversable(base) {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return "", fmt.Errorf("create cluster directory: %w", err)
	}
	if as != nil {
		if err := os.Chown(dir, int(as.uid), int(as.gid)); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("hand cluster directory to user postgres: %w", err)
		}
	}
	return dir, nil
}

// worldTraversable reports whether every user may traverse dir and its
// parents.
func worldTraversable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	addr, ok := l.Addr().(*net.TCPAddr)
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	if !ok {
		return 0, fmt.Errorf("find a free port: unexpected listener address %v", l.Addr())
	}
	return addr.Port, nil
}
