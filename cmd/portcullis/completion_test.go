package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCompletion runs the generated bash script in a real bash, as the shell would on TAB.
func TestCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	var script bytes.Buffer
	if err := completionScript(&script, "bash"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "portcullis.bash")
	if err := os.WriteFile(path, script.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		words []string
		want  string
	}{
		{name: "a command", words: []string{"portcullis", "ru"}, want: "run"},
		{name: "a flag", words: []string{"portcullis", "run", "-log-l"}, want: "-log-level"},
		{name: "a flag's choices", words: []string{"portcullis", "run", "-log-level", "w"}, want: "warn"},
		{name: "a long flag", words: []string{"portcullis", "sign", "--key-"}, want: "--key-id"},
		{name: "an argument's choices", words: []string{"portcullis", "completion", ""}, want: "bash zsh"},
		{name: "help's commands", words: []string{"portcullis", "help", "exp"}, want: "explain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			quoted := make([]string, len(tt.words))
			for i, w := range tt.words {
				quoted[i] = "'" + w + "'"
			}
			prog := "source " + path + "; COMP_WORDS=(" + strings.Join(quoted, " ") + "); COMP_CWORD=" +
				strconv.Itoa(len(tt.words)-1) + "; _portcullis; echo \"${COMPREPLY[*]}\""
			out, err := exec.Command(bash, "--norc", "--noprofile", "-c", prog).CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	var zsh bytes.Buffer
	if err := completionScript(&zsh, "zsh"); err != nil || !strings.HasPrefix(zsh.String(), "#compdef portcullis\n") {
		t.Errorf("zsh script: %v, starts %.40q; want a #compdef header", err, zsh.String())
	}
}
