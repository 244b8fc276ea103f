package deploy

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// No Docker engine runs where the tests run, so the Dockerfile is parsed and
// its invariants checked; TestMain builds the binary with the Dockerfile's
// own go build command, and the tests below run what the image would run.

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
}

type stage struct {
	base, name string
	ins        []instruction
}

// goBuild is the `go build` of a RUN instruction.
type goBuild struct {
	env      []string // KEY=VALUE assignments before `go`
	args     []string // after `go`, starting with "build"
	outIndex int      // index in args of the -o value
}

type dockerfile struct {
	stages []stage
	build  goBuild
	// buildStage is the stage that runs the build.
	buildStage string
}

// parseDockerfile reads path: comments and parser directives are dropped,
// backslash continuations joined, instructions grouped by stage. It fails
// unless exactly one RUN builds ./cmd/sessiongate.
func parseDockerfile(p string) (*dockerfile, error) { return parseDockerfileWith(p, nil) }

// parseDockerfileWith is parseDockerfile with build arguments (docker build
// --build-arg NAME=value) over the ARG defaults, which the go build's
// ${NAME} expansions take.
func parseDockerfileWith(p string, buildArgs map[string]string) (*dockerfile, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	df := &dockerfile{}
	global := map[string]string{} // ARGs before the first FROM
	var stageArgs map[string]string
	arg := func(decl string, scope map[string]string) {
		name, def, hasDef := strings.Cut(decl, "=")
		v, ok := buildArgs[name]
		switch {
		case ok:
		case hasDef:
			v = strings.Trim(def, `"`)
		default:
			v = global[name]
		}
		scope[name] = v
	}
	var cur strings.Builder
	start := 0
	found := 0
	for i, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "ARG" {
			if len(df.stages) == 0 {
				arg(in.args, global)
				continue
			}
			arg(in.args, stageArgs)
		}
		if in.cmd == "FROM" {
			stageArgs = map[string]string{}
			f := strings.Fields(in.args)
			st := stage{base: f[len(f)-1]}
			if len(f) >= 3 && strings.EqualFold(f[len(f)-2], "AS") {
				st.base, st.name = f[len(f)-3], f[len(f)-1]
			}
			df.stages = append(df.stages, st)
		}
		if len(df.stages) == 0 {
			return nil, fmt.Errorf("%s:%d: %s before FROM", p, in.line, in.cmd)
		}
		st := &df.stages[len(df.stages)-1]
		st.ins = append(st.ins, in)
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			// Only ARGs declared in the stage expand, as in Docker.
			expanded := argRef.ReplaceAllStringFunc(in.args, func(ref string) string {
				return stageArgs[strings.Trim(ref, "${}")]
			})
			gb, err := parseGoBuild(expanded)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", p, in.line, err)
			}
			df.build, df.buildStage = gb, st.name
			found++
		}
	}
	if found != 1 {
		return nil, fmt.Errorf("%s: want exactly one RUN with go build ./cmd/sessiongate, found %d", p, found)
	}
	return df, nil
}

// argRef is a ${NAME} or $NAME reference to a build argument.
var argRef = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*`)

func parseGoBuild(s string) (goBuild, error) {
	words, err := shellWords(s)
	if err != nil {
		return goBuild{}, err
	}
	var gb goBuild
	i := 0
	for ; i < len(words) && strings.Contains(words[i], "=") && words[i] != "go"; i++ {
		gb.env = append(gb.env, words[i])
	}
	if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
		return gb, fmt.Errorf("want `[VAR=value ...] go build ...` alone in the RUN, got %q", s)
	}
	gb.args = words[i+1:]
	gb.outIndex = slices.Index(gb.args, "-o") + 1
	if gb.outIndex == 0 || gb.outIndex >= len(gb.args) {
		return gb, errors.New("go build without -o PATH")
	}
	if gb.args[len(gb.args)-1] != "./cmd/sessiongate" {
		return gb, fmt.Errorf("go build must end with ./cmd/sessiongate, got %q", gb.args[len(gb.args)-1])
	}
	return gb, nil
}

// shellWords splits s as a POSIX shell would split a simple command with
// quotes, and refuses what it does not understand (operators, expansions).
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				w.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case strings.ContainsRune("&|;<>$`\\", r):
			return nil, fmt.Errorf("shell syntax %q in %q: keep the build a simple command", r, s)
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// execForm decodes an exec-form (JSON array) argument list; shell form,
// which needs /bin/sh in the image, is an error.
func execForm(s string) ([]string, error) {
	var argv []string
	if err := json.Unmarshal([]byte(s), &argv); err != nil || len(argv) == 0 {
		return nil, fmt.Errorf("%q is not exec form [\"/path\", \"arg\", ...]: the final image has no shell", s)
	}
	return argv, nil
}

// final returns the instructions cmd of the last stage.
func (df *dockerfile) final(cmd string) []instruction {
	var out []instruction
	for _, in := range df.stages[len(df.stages)-1].ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// env returns the ENV of the last stage (KEY=VALUE form).
func (df *dockerfile) env(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, in := range df.final("ENV") {
		words, err := shellWords(in.args)
		if err != nil {
			t.Fatalf("Dockerfile:%d: ENV: %v", in.line, err)
		}
		for _, w := range words {
			k, v, ok := strings.Cut(w, "=")
			if !ok {
				t.Fatalf("Dockerfile:%d: ENV %q: use the KEY=VALUE form", in.line, w)
			}
			env[k] = v
		}
	}
	return env
}

// copyDest finds the COPY of the last stage whose source is src and returns
// its destination; from is the --from stage ("" for the build context).
func (df *dockerfile) copyDest(t *testing.T, from, src string) string {
	t.Helper()
	for _, in := range df.final("COPY") {
		f := strings.Fields(in.args)
		gotFrom := ""
		for len(f) > 0 && strings.HasPrefix(f[0], "--") {
			if v, ok := strings.CutPrefix(f[0], "--from="); ok {
				gotFrom = v
			}
			f = f[1:]
		}
		if len(f) == 2 && gotFrom == from && path.Clean(f[0]) == path.Clean(src) {
			return f[1]
		}
	}
	t.Fatalf("Dockerfile: final stage has no COPY --from=%q %s DEST", from, src)
	return ""
}

func TestDockerfile(t *testing.T) {
	df, err := parseDockerfile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	if len(df.stages) < 2 {
		t.Fatalf("Dockerfile: %d stage(s), want a multi-stage build", len(df.stages))
	}
	final := df.stages[len(df.stages)-1]
	if df.buildStage == "" || df.buildStage == final.name {
		t.Errorf("Dockerfile: go build runs in stage %q, want a named build stage before the final one", df.buildStage)
	}
	// Minimal final image: no shell, no package manager, just the binary.
	if final.base != "scratch" && !strings.HasPrefix(final.base, "gcr.io/distroless/static") {
		t.Errorf("Dockerfile: final image %q, want scratch or gcr.io/distroless/static*", final.base)
	}

	// A static, reproducible build.
	if !slices.Contains(df.build.env, "CGO_ENABLED=0") {
		t.Errorf("Dockerfile: go build env %v, want CGO_ENABLED=0 for a static binary", df.build.env)
	}
	if !slices.Contains(df.build.args, "-trimpath") {
		t.Errorf("Dockerfile: go build %v, want -trimpath", df.build.args)
	}
	bin := df.copyDest(t, df.buildStage, df.build.args[df.build.outIndex])

	// Non-root, by number: Kubernetes' runAsNonRoot cannot check a user name.
	users := df.final("USER")
	if len(users) != 1 {
		t.Fatalf("Dockerfile: final stage has %d USER instructions, want 1", len(users))
	}
	for _, id := range strings.Split(users[0].args, ":") {
		if n, err := strconv.Atoi(id); err != nil || n <= 0 {
			t.Errorf("Dockerfile:%d: USER %q, want a numeric non-zero uid[:gid]", users[0].line, users[0].args)
		}
	}

	env := df.env(t)
	// The example policies, where SESSIONGATE_POLICIES points.
	if got, want := env["SESSIONGATE_POLICIES"], df.copyDest(t, "", "envoy/examples/policies"); got != want {
		t.Errorf("Dockerfile: SESSIONGATE_POLICIES=%q, but the policies are copied to %q", got, want)
	}
	if out, code := runBin(t, "validate", "../envoy/examples/policies"); code != 0 {
		t.Errorf("the image's policies do not validate:\n%s", out)
	}
	// Both listeners exposed.
	var exposed []string
	for _, in := range df.final("EXPOSE") {
		exposed = append(exposed, strings.Fields(in.args)...)
	}
	grpcPort := port(t, env["SESSIONGATE_GRPC_ADDR"])
	for _, k := range []string{"SESSIONGATE_GRPC_ADDR", "SESSIONGATE_HTTP_ADDR"} {
		if p := port(t, env[k]); !slices.Contains(exposed, p) {
			t.Errorf("Dockerfile: %s=%q but EXPOSE %v", k, env[k], exposed)
		}
	}

	// HEALTHCHECK in exec form (no shell in the image), running the binary's
	// own gRPC health check against the gRPC listener.
	hc := df.final("HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("Dockerfile: %d HEALTHCHECK instructions, want 1", len(hc))
	}
	argv := healthcheckArgv(t, hc[0])
	if argv[0] != bin || !slices.Contains(argv, "health") {
		t.Errorf("Dockerfile:%d: HEALTHCHECK runs %q, want %s health", hc[0].line, argv, bin)
	}
	if i := slices.Index(argv, "--addr"); i < 0 || i+1 >= len(argv) || port(t, argv[i+1]) != grpcPort {
		t.Errorf("Dockerfile:%d: HEALTHCHECK %q must name --addr on the gRPC port %s", hc[0].line, argv, grpcPort)
	}

	// ENTRYPOINT is the binary, CMD its serve command with the state file.
	for cmd, want := range map[string][]string{"ENTRYPOINT": {bin}, "CMD": {"serve", "--state-file", imageStateFile}} {
		ins := df.final(cmd)
		if len(ins) != 1 {
			t.Errorf("Dockerfile: %d %s instructions, want 1", len(ins), cmd)
			continue
		}
		if got, err := execForm(ins[0].args); err != nil || !slices.Equal(got, want) {
			t.Errorf("Dockerfile:%d: %s %s, want exec form %q (%v)", ins[0].line, cmd, ins[0].args, want, err)
		}
	}
}

// imageStateFile is where the image keeps the embedded store's state.
const imageStateFile = "/var/lib/sessiongate/state"

// TestImageKeepsSessionEnds: the image's default keeps its promise that a
// signed-out session stays signed out across restarts (S3): its command
// runs the embedded store with a state file, in a declared VOLUME (which
// outlives the container), in a directory the image's user owns (a new
// volume takes the image's ownership), and serve starts and writes there
// with the image's environment and command.
func TestImageKeepsSessionEnds(t *testing.T) {
	df, err := parseDockerfile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	cmds := df.final("CMD")
	if len(cmds) != 1 {
		t.Fatalf("Dockerfile: %d CMD instructions, want 1", len(cmds))
	}
	argv, err := execForm(cmds[0].args)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(argv, "--state-file")
	if i < 0 || i+1 >= len(argv) {
		t.Fatalf("Dockerfile:%d: CMD %q runs the embedded store without --state-file: a restart would forget sign-outs", cmds[0].line, argv)
	}
	state := argv[i+1]
	var volumes []string
	for _, in := range df.final("VOLUME") {
		if v, err := execForm(in.args); err == nil {
			volumes = append(volumes, v...)
		} else {
			volumes = append(volumes, strings.Fields(in.args)...)
		}
	}
	if !slices.Contains(volumes, path.Dir(state)) {
		t.Errorf("Dockerfile: the state file %s is not in a VOLUME (have %q): it would die with the container", state, volumes)
	}
	user := df.final("USER")[0].args
	owned := false
	for _, in := range df.final("COPY") {
		f := strings.Fields(in.args)
		if slices.Contains(f, "--chown="+user) && path.Clean(f[len(f)-1]) == path.Dir(state) {
			owned = true
		}
	}
	if !owned {
		t.Errorf("Dockerfile: no COPY --chown=%s to %s: the non-root user could not write its state", user, path.Dir(state))
	}

	// The image's environment and command, the state directory moved here.
	dir := t.TempDir()
	args := slices.Clone(argv)
	args[i+1] = filepath.Join(dir, path.Base(state))
	s := startServeArgs(t, df.env(t), map[string]string{"SESSIONGATE_POLICIES": "../envoy/examples/policies"}, args...)
	if code, _, err := s.get("/readyz"); err != nil || code != 200 {
		t.Fatalf("GET /readyz: %d %v", code, err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, path.Base(state)+"*")); len(files) == 0 {
		t.Errorf("serve with the image's command wrote nothing in the state directory:\n%s", s.output())
	}
}

// healthcheckArgv returns the command of a HEALTHCHECK [OPTIONS] CMD [...].
func healthcheckArgv(t *testing.T, in instruction) []string {
	t.Helper()
	rest := in.args
	for strings.HasPrefix(rest, "--") {
		_, rest, _ = strings.Cut(rest, " ")
		rest = strings.TrimSpace(rest)
	}
	form, ok := strings.CutPrefix(rest, "CMD ")
	if !ok {
		t.Fatalf("Dockerfile:%d: HEALTHCHECK %q, want HEALTHCHECK [OPTIONS] CMD [...]", in.line, in.args)
	}
	argv, err := execForm(strings.TrimSpace(form))
	if err != nil {
		t.Fatalf("Dockerfile:%d: HEALTHCHECK: %v", in.line, err)
	}
	return argv
}

// TestBinaryIsStatic checks what TestMain built with the Dockerfile's
// command: no dynamic loader, no shared libraries, so it runs on
// distroless/static or scratch.
func TestBinaryIsStatic(t *testing.T) {
	f, err := elf.Open(binPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter (PT_INTERP): dynamically linked", binPath)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", binPath, libs)
	}
	// The image build stamps its --build-arg VERSION and REVISION.
	want := fmt.Sprintf("sessiongate %s (revision %s, go", stampArgs["VERSION"], stampArgs["REVISION"])
	if out, code := runBin(t, "version"); code != 0 || !strings.HasPrefix(out, want) {
		t.Errorf("sessiongate version: exit %d, %q, want it to start with %q", code, out, want)
	}
}

// TestHealthcheckAgainstServer runs the Dockerfile's HEALTHCHECK command
// against a server started with the image's environment.
func TestHealthcheckAgainstServer(t *testing.T) {
	df, err := parseDockerfile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	env := df.env(t)
	s := startServe(t, env, map[string]string{"SESSIONGATE_POLICIES": "../envoy/examples/policies"})
	argv := healthcheckArgv(t, df.final("HEALTHCHECK")[0])
	args := append([]string(nil), argv[1:]...)
	args[slices.Index(args, "--addr")+1] = s.grpcAddr
	if out, code := runBin(t, args...); code != 0 {
		t.Errorf("HEALTHCHECK %q against a serving server: exit %d\n%s", args, code, out)
	}
	// And it fails where nothing serves, or Docker would never see a failure.
	args[slices.Index(args, "--addr")+1] = "127.0.0.1:" + freePort(t)
	if out, code := runBin(t, args...); code == 0 {
		t.Errorf("HEALTHCHECK %q with no server: exit 0\n%s", args, out)
	}
}

// port returns the port of a listen address such as ":9001".
func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil || p == "" {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return p
}
