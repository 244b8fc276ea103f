package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder fills a spec from a yaml.Node tree rather than through
// yaml.Unmarshal, so that every problem carries its line and dotted field,
// all problems are collected instead of the first, and unknown or repeated
// keys are errors.
type decoder struct {
	file string
	// lines maps the dotted path of every field present in the file to the
	// line of its key (of the item, for list items). Validation uses it for
	// presence (defaults apply to absent fields) and to place its errors.
	lines map[string]int
	// bad holds fields that already have a problem: validation skips them,
	// so that one mistake yields one error, not a cascade.
	bad  map[string]bool
	errs Errors
	// warns are choices worth a second look that are not mistakes.
	warns Errors
}

// parse decodes one policy file. Where ok, the spec holds what could be
// decoded (zero where broken) and is worth validating; otherwise the file
// is not a policy document at all.
func parse(file string, data []byte) (sp *spec, d *decoder, ok bool) {
	d = &decoder{file: file, lines: map[string]int{}, bad: map[string]bool{}}
	sp = &spec{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		d.syntax(err, data)
		return sp, d, false
	}
	if len(doc.Content) == 0 {
		d.errorf(1, "", "empty file")
		return sp, d, false
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		d.errorf(root.Line, "", "must be a mapping of fields such as hosts, session, token, login")
		return sp, d, false
	}
	// A second document would silently be ignored; say so instead.
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		d.errorf(more.Line, "yaml", "only one document per file")
	} else if !errors.Is(err, io.EOF) {
		d.syntax(err, data)
	}
	d.decode(root, "", reflect.ValueOf(sp).Elem())
	return sp, d, true
}

// errorf records a problem; field "" stands for the whole document.
func (d *decoder) errorf(line int, field, format string, args ...any) {
	d.bad[field] = true
	if field == "" {
		field = "policy"
	}
	d.errs = append(d.errs, Error{File: d.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// syntax turns a yaml.v3 parse error ("yaml: line 3: msg") into an Error.
// data is the file, to explain the parser's words where they are obscure.
func (d *decoder) syntax(err error, data []byte) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, tail
			}
		}
	}
	// yaml.v3 numbers lines from 1 for scanner errors but from 0 for
	// parser errors (and omits line 0), so those are shifted to match.
	switch msg {
	case "did not find expected <document start>", "did not find expected node content",
		"did not find expected '-' indicator", "did not find expected key",
		"did not find expected ',' or ']'", "did not find expected ',' or '}'",
		"found undefined tag handle", "found duplicate %YAML directive",
		"found incompatible YAML document", "found duplicate %TAG directive":
		line++
	}
	if tabIndented(data, line) {
		// yaml.v3 says "found character that cannot start any token".
		msg = "a tab in the indentation: YAML indents with spaces only"
	}
	d.errorf(max(line, 1), "yaml", "%s", msg)
}

// tabIndented reports whether line (1-based) of data has a tab in its
// leading white space.
func tabIndented(data []byte, line int) bool {
	if line < 1 {
		return false
	}
	for l := range bytes.Lines(data) {
		if line--; line > 0 {
			continue
		}
		indent := l[:len(l)-len(bytes.TrimLeft(l, " \t"))]
		return bytes.IndexByte(indent, '\t') >= 0
	}
	return false
}

func (d *decoder) decode(n *yaml.Node, field string, v reflect.Value) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		d.errorf(n.Line, field, "empty value (omit the field to use its default)")
		return
	}
	switch t := v.Type(); {
	case t == reflect.TypeFor[time.Duration]():
		d.duration(n, field, v)
	case t.Kind() == reflect.String:
		// Any scalar is taken as written, so reauth_params {max_age: 0}
		// and numeric audiences work without quotes.
		if d.scalar(n, field, "a string") {
			v.SetString(n.Value)
		}
	case t.Kind() == reflect.Bool:
		if !d.scalar(n, field, "true or false") {
			return
		}
		if n.Tag != "!!bool" {
			d.errorf(n.Line, field, "must be true or false, not %q", n.Value)
			return
		}
		var b bool
		if n.Decode(&b) != nil {
			d.errorf(n.Line, field, "must be true or false, not %q", n.Value)
			return
		}
		v.SetBool(b)
	case t.Kind() == reflect.Int:
		var i int
		if !d.scalar(n, field, "an integer") {
			return
		}
		if n.Tag != "!!int" || n.Decode(&i) != nil {
			d.errorf(n.Line, field, "must be an integer, not %q", n.Value)
			return
		}
		v.SetInt(int64(i))
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n.Line, field, "must be a list")
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			f := fmt.Sprintf("%s[%d]", field, i)
			d.lines[f] = item.Line
			d.decode(item, f, s.Index(i))
		}
		v.Set(s)
	case t.Kind() == reflect.Map:
		m := reflect.MakeMap(t)
		d.mapping(n, field, func(key string, line int, val *yaml.Node) {
			f := field + "." + key
			d.lines[f] = line
			e := reflect.New(t.Elem()).Elem()
			d.decode(val, f, e)
			m.SetMapIndex(reflect.ValueOf(key), e)
		})
		v.Set(m)
	case t.Kind() == reflect.Struct:
		d.mapping(n, field, func(key string, line int, val *yaml.Node) {
			f := strings.TrimPrefix(field+"."+key, ".")
			i, ok := fieldIndex(t, key)
			if !ok {
				d.errorf(line, f, "unknown field (want one of: %s)", strings.Join(fieldNames(t), ", "))
				return
			}
			d.lines[f] = line
			d.decode(val, f, v.Field(i))
		})
	default:
		panic("policy: unsupported schema type " + t.String())
	}
}

// mapping walks a mapping node, rejecting repeated keys (yaml.v3 only does
// that when decoding into Go values).
func (d *decoder) mapping(n *yaml.Node, field string, each func(key string, line int, val *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, field, "must be a mapping")
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		f := strings.TrimPrefix(field+"."+k.Value, ".")
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			d.errorf(k.Line, field, "keys must be non-empty strings")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(k.Line, f, "repeated (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		each(k.Value, k.Line, val)
	}
}

func (d *decoder) scalar(n *yaml.Node, field, want string) bool {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n.Line, field, "must be %s", want)
		return false
	}
	return true
}

func (d *decoder) duration(n *yaml.Node, field string, v reflect.Value) {
	if !d.scalar(n, field, "a duration such as 90s, 30m or 8h") {
		return
	}
	// A bare number is ambiguous (seconds? minutes?), so it is refused even
	// though YAML parsed it as a number.
	if n.Tag == "!!int" || n.Tag == "!!float" {
		d.errorf(n.Line, field, "%s has no unit: use a duration such as %ss, %sm or %sh", n.Value, n.Value, n.Value, n.Value)
		return
	}
	dur, err := time.ParseDuration(n.Value)
	if err != nil {
		d.errorf(n.Line, field, "invalid duration %q: use Go syntax such as 90s, 1.5s, 500ms, 30m or 8h", n.Value)
		return
	}
	v.SetInt(int64(dur))
}

func fieldIndex(t reflect.Type, key string) (int, bool) {
	for i := range t.NumField() {
		if yamlName(t.Field(i)) == key {
			return i, true
		}
	}
	return 0, false
}

func fieldNames(t reflect.Type) []string {
	names := make([]string, t.NumField())
	for i := range names {
		names[i] = yamlName(t.Field(i))
	}
	return names
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}
