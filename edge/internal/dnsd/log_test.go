package dnsd

import (
	"io"
	"log/slog"
)

func newTestLogger(w io.Writer) (*slog.Logger, error) {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), nil
}
