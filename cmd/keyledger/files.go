package main

import (
	"os"
	"path/filepath"
)

// writeWhole writes path whole or not at all: a fresh file of its own in
// the same directory (CreateTemp: never through a symlink or into an
// existing file), given mode, synced, then renamed over path when replace,
// or else linked to it, which fails with fs.ErrExist when path exists.
// The directory is made (0700) when missing.
func writeWhole(path string, data []byte, mode os.FileMode, replace bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if replace {
		return os.Rename(f.Name(), path)
	}
	return os.Link(f.Name(), path)
}
