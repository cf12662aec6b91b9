package scout

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/carbide-dev/carbide/edge/internal/initramfs"
)

// moduleResult counts what loadModules did.
type moduleResult struct {
	Loaded, Present, NoDevice, Failed int
}

// loadModules loads the modules listed in the image's module list (see
// package initramfs), in its order, with finit_module. A module that is
// already loaded, or that finds no device to drive, is fine; any other
// failure is logged and the rest are still loaded.
func loadModules(log *slog.Logger, root string) (moduleResult, error) {
	var res moduleResult
	list, err := os.ReadFile(filepath.Join(root, initramfs.ModuleListPath))
	if err != nil {
		return res, fmt.Errorf("read the module list: %w", err)
	}
	for line := range strings.Lines(string(list)) {
		p := strings.TrimSpace(line)
		if p == "" {
			continue
		}
		name := initramfs.ModuleName(p)
		switch err := loadModule(filepath.Join(root, p)); {
		case err == nil:
			res.Loaded++
		case errors.Is(err, unix.EEXIST):
			res.Present++
		case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
			res.NoDevice++
		default:
			res.Failed++
			log.Warn("scout: module " + name + ": " + err.Error())
		}
	}
	return res, nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", 0)
}
