package initramfs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ModuleIndex is what a kernel package says about its modules: the files
// (modules.dep, relative to lib/modules/<version>), each one's
// dependencies, the modules built into the kernel (modules.builtin) and
// the "pre" soft dependencies (modules.softdep).
type ModuleIndex struct {
	// Dir is the package's lib/modules/<version> directory.
	Dir string
	// byName maps a module name (with '_' for '-') to its file.
	byName map[string]string
	// deps maps a module file to the files it depends on, as modules.dep
	// lists them.
	deps map[string][]string
	// builtin holds the names of the modules built into the kernel.
	builtin map[string]bool
	// softPre maps a module name to the modules modprobe loads before it.
	softPre map[string][]string
}

// ModuleName returns the name of a module file, as the kernel and modprobe
// spell it: the file name without .ko and any compression suffix, with
// '_' for '-' ("kernel/drivers/nvme/host/nvme-core.ko" -> "nvme_core").
func ModuleName(file string) string {
	base := filepath.Base(file)
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"} {
		if b, ok := strings.CutSuffix(base, ext); ok {
			base = b
			break
		}
	}
	return strings.ReplaceAll(base, "-", "_")
}

// LoadModuleIndex reads modules.dep, modules.builtin and, when present,
// modules.softdep from dir, a lib/modules/<version> directory.
func LoadModuleIndex(dir string) (*ModuleIndex, error) {
	ix := &ModuleIndex{
		Dir:     dir,
		byName:  map[string]string{},
		deps:    map[string][]string{},
		builtin: map[string]bool{},
		softPre: map[string][]string{},
	}
	depPath := filepath.Join(dir, "modules.dep")
	err := eachLine(depPath, func(line string) error {
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("line %q has no ':'", line)
		}
		file = strings.TrimSpace(file)
		ix.deps[file] = strings.Fields(rest)
		ix.byName[ModuleName(file)] = file
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is missing: a kernel package ships without it and its installation runs depmod; "+
			"scripts/fetch-kernel runs `depmod -b <package dir> <version>` after unpacking", depPath)
	}
	if err != nil {
		return nil, err
	}
	for file, deps := range ix.deps {
		for _, d := range deps {
			if _, ok := ix.deps[d]; !ok {
				return nil, fmt.Errorf("%s: %s depends on %s, which has no line of its own", depPath, file, d)
			}
		}
	}
	err = eachLine(filepath.Join(dir, "modules.builtin"), func(line string) error {
		ix.builtin[ModuleName(line)] = true
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	// "softdep <module> pre: <a> <b> post: <c>"
	err = eachLine(filepath.Join(dir, "modules.softdep"), func(line string) error {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "softdep" {
			return nil
		}
		name, pre := strings.ReplaceAll(f[1], "-", "_"), false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					ix.softPre[name] = append(ix.softPre[name], strings.ReplaceAll(w, "-", "_"))
				}
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return ix, nil
}

// eachLine calls fn with each non-empty line of path that is not a
// comment.
func eachLine(path string, fn func(string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(line); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// Resolution is how a list of wanted modules maps onto a kernel package.
type Resolution struct {
	// Files are the module files to load, relative to the index's Dir,
	// in load order: every module after the modules it depends on.
	Files []string
	// Builtin are the wanted modules built into the kernel: nothing to
	// load.
	Builtin []string
	// Missing are the wanted modules the package has neither as a file
	// nor built in.
	Missing []string
}

// Resolve returns the wanted modules (by name; '-' and '_' are the same)
// with everything they depend on, in load order. A module's dependencies
// come from modules.dep, plus its "pre" soft dependencies that the package
// has as files. The order is a depth-first walk of the wanted modules in
// the given order, so the same input always gives the same list.
func (ix *ModuleIndex) Resolve(wanted []string) (*Resolution, error) {
	r := &Resolution{}
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var visit func(file string, path []string) error
	visit = func(file string, path []string) error {
		switch state[file] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("modules.dep has a dependency cycle: %s", strings.Join(append(path, file), " -> "))
		}
		state[file] = visiting
		path = append(path, file)
		var deps []string
		for _, pre := range ix.softPre[ModuleName(file)] {
			if f, ok := ix.byName[pre]; ok {
				deps = append(deps, f)
			}
		}
		// modules.dep lists a module's whole closure, nearest first, and
		// modprobe loads it from the end: walk it that way round.
		for _, d := range slices.Backward(ix.deps[file]) {
			deps = append(deps, d)
		}
		for _, d := range deps {
			if err := visit(d, path); err != nil {
				return err
			}
		}
		state[file] = done
		r.Files = append(r.Files, file)
		return nil
	}
	seen := map[string]bool{}
	for _, w := range wanted {
		name := strings.ReplaceAll(strings.TrimSpace(w), "-", "_")
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		if file, ok := ix.byName[name]; ok {
			if err := visit(file, nil); err != nil {
				return nil, err
			}
			continue
		}
		if ix.builtin[name] {
			r.Builtin = append(r.Builtin, name)
		} else {
			r.Missing = append(r.Missing, name)
		}
	}
	return r, nil
}
