package pxed

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// Why a file is not served.
var (
	// errInvalidName: the name is not a plain relative path (it is
	// absolute, holds a ".." or "." element, an empty element or a NUL).
	errInvalidName = errors.New("not a relative path inside the served directory")
	// errNotRegular: the name is a directory, device, socket or pipe.
	errNotRegular = errors.New("not a regular file")
)

// openFile opens name, a slash-separated path relative to root, for
// reading. Names that are not plain relative paths are refused before they
// reach the file system; os.Root then refuses every path that leaves root,
// through ".." or a symbolic link. Only regular files are opened: a
// directory is never listed, and a named pipe never blocks the caller
// (it is opened non-blocking and refused).
func openFile(root *os.Root, name string) (*os.File, fs.FileInfo, error) {
	if !fs.ValidPath(name) || name == "." || strings.ContainsRune(name, 0) {
		return nil, nil, errInvalidName
	}
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, errNotRegular
	}
	return f, info, nil
}

// fileRefusal sorts an error of openFile: "invalid" for a name that is not
// a plain relative path, "not_found" for a missing or non-regular file, and
// "denied" for the rest (a path out of the root through a symbolic link, a
// file the daemon may not read).
func fileRefusal(err error) string {
	switch {
	case errors.Is(err, errInvalidName):
		return "invalid"
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, errNotRegular), errors.Is(err, syscall.ENOTDIR):
		return "not_found"
	}
	return "denied"
}
