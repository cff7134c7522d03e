package charttest

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The Dockerfile the chart's image is built from, and the main package
// whose variables its -ldflags set.
const (
	dockerfilePath = "../../Dockerfile"
	mainPath       = "../../../main.go"
)

// instruction is one Dockerfile instruction, its continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// stage is the instructions from one FROM to the next.
type stage struct {
	from         string // the FROM line's arguments
	instructions []instruction
}

// parseDockerfile splits a Dockerfile into stages of instructions; comments
// and blank lines go, a line that ends in a backslash continues on the next.
// What comes before the first FROM (global ARGs) is stage 0's from "".
func parseDockerfile(t *testing.T, text string) []stage {
	t.Helper()
	stages := []stage{{}}
	var line strings.Builder
	for _, raw := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(raw)
		if line.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if cont, ok := strings.CutSuffix(trimmed, "\\"); ok {
			line.WriteString(cont + " ")
			continue
		}
		line.WriteString(trimmed)
		cmd, args, _ := strings.Cut(line.String(), " ")
		line.Reset()
		in := instruction{strings.ToUpper(cmd), strings.Join(strings.Fields(args), " ")}
		if in.cmd == "FROM" {
			stages = append(stages, stage{from: in.args})
			continue
		}
		stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, in)
	}
	if line.Len() > 0 {
		t.Fatalf("%s ends in a continued line", dockerfilePath)
	}
	return stages
}

func (s stage) all(cmd string) []string {
	var args []string
	for _, in := range s.instructions {
		if in.cmd == cmd {
			args = append(args, in.args)
		}
	}
	return args
}

// TestDockerfile checks what cannot be built here: a multi-stage build of
// a static binary whose version line comes from build arguments, on
// distroless as the nonroot user, with OCI labels from build arguments.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	stages := parseDockerfile(t, string(data))
	if len(stages) < 3 {
		t.Fatalf("%d build stages, want a build stage and a runtime stage", len(stages)-1)
	}
	build, final := stages[len(stages)-2], stages[len(stages)-1]

	if final.from != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("runtime stage FROM %q, want gcr.io/distroless/static-debian12:nonroot", final.from)
	}
	if users := final.all("USER"); len(users) != 1 || !regexp.MustCompile(`^(nonroot|65532)(:(nonroot|65532))?$`).MatchString(users[0]) {
		t.Errorf("runtime stage USER %v, want nonroot (65532)", users)
	}
	if runs := final.all("RUN"); len(runs) != 0 {
		t.Errorf("runtime stage runs %v: distroless has no shell", runs)
	}
	copies := final.all("COPY")
	if len(copies) != 1 || !strings.HasPrefix(copies[0], "--from=") {
		t.Errorf("runtime stage COPY %v, want the binary from the build stage only", copies)
	}
	if ep := final.all("ENTRYPOINT"); len(ep) != 1 || !strings.HasPrefix(ep[0], "[") {
		t.Errorf("ENTRYPOINT %v, want the exec form", ep)
	}

	// The build: static, trimmed paths, the version line's variables.
	var goBuild string
	for _, run := range build.all("RUN") {
		if strings.Contains(run, "go build") {
			goBuild = run
		}
	}
	if goBuild == "" {
		t.Fatalf("the build stage %q has no go build", build.from)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=${VERSION}", "-X main.commit=${REVISION}"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("go build %q lacks %s", goBuild, want)
		}
	}
	buildArgs := declaredArgs(build)
	for _, arg := range []string{"VERSION", "REVISION"} {
		if !buildArgs[arg] {
			t.Errorf("the build stage does not declare ARG %s", arg)
		}
	}

	// main.go has the variables -X sets: -X of a missing one is silently ignored.
	src, err := os.ReadFile(mainPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"version", "commit"} {
		if !regexp.MustCompile(`(?m)^\s*(var\s+)?` + v + `\s*(string\s*)?=\s*"`).Match(src) {
			t.Errorf("main.go has no string variable %s for -X main.%s", v, v)
		}
	}

	// Every OCI label is a build argument of the runtime stage.
	finalArgs := declaredArgs(final)
	label := regexp.MustCompile(`([a-z0-9.]+)="\$\{([A-Z_]+)\}"`)
	found := map[string]bool{}
	for _, l := range final.all("LABEL") {
		rest := label.ReplaceAllStringFunc(l, func(m string) string {
			sub := label.FindStringSubmatch(m)
			found[sub[1]] = true
			if !finalArgs[sub[2]] {
				t.Errorf("LABEL %s uses ${%s}, which the runtime stage does not declare (ARG %s)", sub[1], sub[2], sub[2])
			}
			return ""
		})
		if strings.TrimSpace(rest) != "" {
			t.Errorf("LABEL %q has a value that is not one build argument: %q", l, strings.TrimSpace(rest))
		}
	}
	for _, name := range []string{"title", "description", "source", "licenses", "version", "revision", "created"} {
		if !found["org.opencontainers.image."+name] {
			t.Errorf("no LABEL org.opencontainers.image.%s", name)
		}
	}
}

// declaredArgs are the ARG names of a stage.
func declaredArgs(s stage) map[string]bool {
	args := map[string]bool{}
	for _, a := range s.all("ARG") {
		name, _, _ := strings.Cut(a, "=")
		args[name] = true
	}
	return args
}
