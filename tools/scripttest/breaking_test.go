// Package scripttest tests the shell scripts under scripts/ by running them
// in throwaway git repositories, the way CI runs them. `make script-test`
// (part of `make test`) runs it; it needs the tools `make tools` builds.
package scripttest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	bufYAML = `version: v2
modules:
  - path: proto
    breaking:
      use:
        - FILE
`
	protoV1 = `syntax = "proto3";
package demo.v1;
message Thing {
  string name = 1;
}
`
	protoV2 = `syntax = "proto3";
package demo.v1;
message Thing {
  string name = 1;
  string colour = 2;
}
`
	protoV3 = `syntax = "proto3";
package demo.v1;
message Thing {
  string colour = 2;
}
`
)

// origin builds a repository the clones fetch from:
//
//	main:        readme -> add proto -> add a field
//	add-proto:   "add proto"
//	drop-field:  main + a commit that deletes a field (breaking)
func origin(t *testing.T) (dir string, commits map[string]string) {
	t.Helper()
	root := repoRoot(t)
	script, err := os.ReadFile(filepath.Join(root, "scripts", "breaking"))
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(t.TempDir(), "origin")
	git(t, "", "init", "-q", "-b", "main", dir)
	commits = map[string]string{}
	commit := func(name string, files map[string]string) {
		for path, content := range files {
			p := filepath.Join(dir, path)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		git(t, dir, "add", "-A")
		git(t, dir, "commit", "-q", "-m", name)
		commits[name] = strings.TrimSpace(git(t, dir, "rev-parse", "--short", "HEAD"))
	}
	commit("readme", map[string]string{"README": "demo\n", "scripts/breaking": string(script), "buf.yaml": bufYAML})
	commit("add proto", map[string]string{"proto/demo/v1/demo.proto": protoV1})
	git(t, dir, "branch", "add-proto")
	commit("add a field", map[string]string{"proto/demo/v1/demo.proto": protoV2})
	git(t, dir, "checkout", "-q", "-b", "drop-field")
	commit("drop a field", map[string]string{"proto/demo/v1/demo.proto": protoV3})
	git(t, dir, "checkout", "-q", "main")
	return dir, commits
}

// clone clones branch of origin into a new directory, shallow when depth
// is set, and adds the untracked .build/protovalidate that `make generate`
// writes in a real checkout.
func clone(t *testing.T, origin, branch string, shallow bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "clone")
	args := []string{"clone", "-q", "--branch", branch}
	if shallow {
		args = append(args, "--depth", "1")
	}
	git(t, "", append(args, "file://"+origin, dir)...)
	if err := os.MkdirAll(filepath.Join(dir, ".build", "protovalidate"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBreakingShallowCloneOfMainComparesWithParent(t *testing.T) {
	o, commits := origin(t)
	dir := clone(t, o, "main", true)
	out, err := breaking(t, dir)
	if err != nil {
		t.Fatalf("scripts/breaking failed on a compatible change: %v\n%s", err, out)
	}
	if want := "no breaking change against " + commits["add proto"]; !strings.Contains(out, want) {
		t.Fatalf("output lacks %q: it did not compare with the parent commit:\n%s", want, out)
	}
}

func TestBreakingShallowCloneOfBranchFindsBreakingChange(t *testing.T) {
	o, _ := origin(t)
	dir := clone(t, o, "drop-field", true) // no main in this clone
	out, err := breaking(t, dir)
	if err == nil {
		t.Fatalf("scripts/breaking passed a deleted field:\n%s", out)
	}
	if !strings.Contains(out, `Previously present field "1" with name "name" on message "Thing" was deleted`) {
		t.Fatalf("scripts/breaking failed, but not on the deleted field:\n%s", out)
	}
}

func TestBreakingShallowCloneOfMainFindsBreakingChange(t *testing.T) {
	o, _ := origin(t)
	dir := clone(t, o, "drop-field", true)
	git(t, dir, "checkout", "-q", "-b", "main") // main is HEAD: compare with HEAD~1
	out, err := breaking(t, dir)
	if err == nil || !strings.Contains(out, `with name "name" on message "Thing" was deleted`) {
		t.Fatalf("scripts/breaking did not report the deleted field (err %v):\n%s", err, out)
	}
}

func TestBreakingFailsWhenItCannotFetch(t *testing.T) {
	o, _ := origin(t)
	dir := clone(t, o, "main", true)
	git(t, dir, "remote", "set-url", "origin", "file://"+filepath.Join(t.TempDir(), "gone"))
	out, err := breaking(t, dir)
	if err == nil {
		t.Fatalf("scripts/breaking passed a shallow clone it could not deepen:\n%s", out)
	}
	if !strings.Contains(out, "fetching its history from origin failed") {
		t.Fatalf("scripts/breaking failed without saying why:\n%s", out)
	}
}

func TestBreakingFailsWithUnknownBase(t *testing.T) {
	o, _ := origin(t)
	dir := clone(t, o, "main", true)
	out, err := breaking(t, dir, "BREAKING_AGAINST=0123456789abcdef0123456789abcdef01234567")
	if err == nil || !strings.Contains(out, "is not a commit in this clone") {
		t.Fatalf("scripts/breaking with a missing BREAKING_AGAINST: err %v\n%s", err, out)
	}
}

// Only the commit that adds proto/ has nothing to compare with, and only
// once its parent is known to have no proto/.
func TestBreakingFirstCommitWithProto(t *testing.T) {
	o, commits := origin(t)
	dir := clone(t, o, "main", true)
	git(t, dir, "fetch", "-q", "--unshallow", "origin")
	git(t, dir, "reset", "-q", "--hard", commits["add proto"])
	out, err := breaking(t, dir)
	if err != nil || !strings.Contains(out, "HEAD adds proto/") {
		t.Fatalf("scripts/breaking on the commit adding proto/: err %v\n%s", err, out)
	}

	// Against a base without proto/ that is not HEAD's parent: a mistake.
	dir = clone(t, o, "main", false)
	out, err = breaking(t, dir, "BREAKING_AGAINST="+commits["readme"])
	if err == nil || !strings.Contains(out, "has no proto/ to compare with") {
		t.Fatalf("scripts/breaking against a commit without proto/: err %v\n%s", err, out)
	}
}

func breaking(t *testing.T, dir string, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(dir, "scripts", "breaking"))
	cmd.Dir = dir
	cmd.Env = append(gitEnv(t), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// gitEnv runs git away from the user's configuration, with buf from ./bin.
func gitEnv(t *testing.T) []string {
	bin := filepath.Join(repoRoot(t), "bin")
	if _, err := os.Stat(filepath.Join(bin, "buf")); err != nil {
		t.Fatalf("%v: run make tools first", err)
	}
	return append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com",
		"BREAKING_AGAINST=",
	)
}

func repoRoot(t *testing.T) string {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}
