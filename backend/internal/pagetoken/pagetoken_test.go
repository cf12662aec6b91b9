package pagetoken

import (
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	f := Filter("state=ready", "label=rack=r1")
	tok := Encode("0b9d8f6e-1a2b-4c3d-8e9f-001122334455", f)
	got, err := Decode(tok, f)
	if err != nil || got != "0b9d8f6e-1a2b-4c3d-8e9f-001122334455" {
		t.Fatalf("Decode(Encode(x)) = %q, %v", got, err)
	}
	if got, err := Decode("", f); got != "" || err != nil {
		t.Errorf("Decode of an empty token = %q, %v; want the first page", got, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	f := Filter("a")
	tests := map[string]string{
		"other filters": Encode("x", Filter("b")),
		"not base64":    "!!!",
		"not JSON":      "bm90IGpzb24",
		"empty key":     Encode("", f),
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := Decode(tok, f); !errors.Is(err, ErrInvalid) {
				t.Errorf("Decode(%q) error = %v, want ErrInvalid", tok, err)
			}
		})
	}
}

func TestFilterSeparatesParts(t *testing.T) {
	t.Parallel()
	if Filter("ab", "c") == Filter("a", "bc") {
		t.Error("Filter does not separate its parts")
	}
}
