package ids

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
)

func TestParse(t *testing.T) {
	t.Parallel()
	const good = "123e4567-e89b-12d3-a456-426614174000"
	if id, err := Parse("id", good); err != nil || id.String() != good {
		t.Fatalf("Parse(%q) = %v, %v", good, id, err)
	}
	for name, value := range map[string]string{
		"empty":     "",
		"short":     good[:35],
		"not hex":   "zze4567-e89b-12d3-a456-426614174000",
		"long junk": strings.Repeat("x", 1000),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("machine.id", value)
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("Parse(%q) error = %v, want InvalidArgument", value, err)
			}
			msg := err.(*connect.Error).Message()
			if !strings.HasPrefix(msg, "machine.id") || len(msg) > 200 {
				t.Fatalf("message %q should start with the field and stay short", msg)
			}
		})
	}
}
