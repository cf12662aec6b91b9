package scout

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCmdline(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		cmdline string
		want    Params
		err     string
	}{
		"boot from the PXE daemon": {
			cmdline: "initrd=scout.cpio.gz console=ttyS0,115200 carbide.config=http://198.18.0.1:8080/agent/52:54:00:12:34:56.json carbide.mac=52:54:00:12:34:56\n",
			want:    Params{ConfigURL: "http://198.18.0.1:8080/agent/52:54:00:12:34:56.json", MAC: "52:54:00:12:34:56"},
		},
		"print mode": {
			cmdline: "console=ttyS0 carbide.inventory=print",
			want:    Params{Print: true},
		},
		"MAC in upper case with dashes": {
			cmdline: "carbide.config=https://pxe/agent/x.json carbide.mac=52-54-00-AB-CD-EF",
			want:    Params{ConfigURL: "https://pxe/agent/x.json", MAC: "52:54:00:ab:cd:ef"},
		},
		"quoted value": {
			cmdline: `quiet carbide.config="http://pxe:8080/agent/a.json" other="a b"`,
			want:    Params{ConfigURL: "http://pxe:8080/agent/a.json"},
		},
		"nothing to do": {cmdline: "console=ttyS0", err: "neither carbide.config=<URL> nor carbide.inventory=print"},
		"not a URL":     {cmdline: "carbide.config=pxe/agent.json", err: "want an http:// or https:// URL"},
		"ftp URL":       {cmdline: "carbide.config=ftp://pxe/agent.json", err: "want an http:// or https:// URL"},
		"bad MAC": {
			cmdline: "carbide.config=http://pxe/a.json carbide.mac=52:54:00",
			want:    Params{ConfigURL: "http://pxe/a.json"}, err: "want a MAC address",
		},
		"long MAC": {
			cmdline: "carbide.config=http://pxe/a.json carbide.mac=00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
			want:    Params{ConfigURL: "http://pxe/a.json"}, err: "want a MAC address",
		},
		"unknown print":   {cmdline: "carbide.inventory=json", err: `the only value is "print"`},
		"empty cmdline":   {cmdline: "", err: "neither"},
		"bad MAC printed": {cmdline: "carbide.inventory=print carbide.mac=zz", want: Params{Print: true}, err: "want a MAC address"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseCmdline(tc.cmdline)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("params (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSplitCmdline(t *testing.T) {
	t.Parallel()
	got := splitCmdline(" a  b=\"c d\"\te=\"\" \"f g\"=h\n")
	want := []string{"a", "b=c d", "e=", "f g=h"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
