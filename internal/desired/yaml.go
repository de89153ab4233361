package desired

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// text is a scalar kept as written. Numbers and booleans are accepted so
// that `PORT: 8080` works, but as their source text: decoding them first
// would turn `VERSION: 1.10` into "1.1" and `MODE: 0755` into "493".
type text string

func (t *text) UnmarshalYAML(n ast.Node) error {
	switch n.(type) {
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		*t = text(n.GetToken().Value)
		return nil
	case *ast.MappingNode, *ast.SequenceNode:
		return &leafError{n.GetToken(), fmt.Sprintf("must be a string, not a %s", n.Type().YAMLName())}
	}
	var s string // quoted, plain, block and tagged strings
	if err := yaml.NodeToValue(n, &s); err != nil {
		return &leafError{n.GetToken(), "must be a string"}
	}
	*t = text(s)
	return nil
}

// count is a whole number. Decoding straight into int would accept 1.5 as 1.
type count int

func (c *count) UnmarshalYAML(n ast.Node) error {
	var i int
	if _, ok := n.(*ast.IntegerNode); !ok || yaml.NodeToValue(n, &i) != nil {
		return &leafError{n.GetToken(), fmt.Sprintf("%s is not a whole number", strings.TrimSpace(n.String()))}
	}
	*c = count(i)
	return nil
}

// leafError is a problem with one value, found where the decoder cannot
// tell us its path; explain finds the path from the token's position.
type leafError struct {
	tok *token.Token
	msg string
}

func (e *leafError) Error() string { return e.msg }

// checkSyntax rejects what the decoder would skip over: a second document
// in the stream, which would otherwise be silently ignored.
func checkSyntax(b []byte) error {
	f, err := parser.ParseBytes(b, 0)
	if err != nil {
		return explain(b, err)
	}
	docs := 0
	for _, d := range f.Docs {
		if d.Body != nil {
			docs++
		}
	}
	if docs > 1 {
		return errors.New("more than one YAML document (---); put all apps in one")
	}
	return nil
}

// explain rewrites a decoding error as "path: what is wrong (line N)" so it
// names the app and field, which goccy's messages (given a Go type name and
// a position) leave the reader to work out.
func explain(b []byte, err error) error {
	var tok *token.Token
	var msg string
	var le *leafError
	var ye yaml.Error
	var te *yaml.TypeError
	switch {
	case errors.As(err, &le):
		tok, msg = le.tok, le.msg
	case errors.As(err, &te):
		tok, msg = te.Token, "must be "+kindName(te.DstType)
	case errors.As(err, &ye):
		tok, msg = ye.GetToken(), ye.GetMessage()
	default:
		return err
	}
	if tok == nil || tok.Position == nil {
		return errors.New(msg)
	}
	path := pathAt(b, tok.Position.Offset)
	if strings.HasPrefix(msg, "unknown field") {
		switch strings.Count(path, ".") {
		case 0:
			msg += " (a document has only apps)"
		case 2:
			msg += " (an app has artifact, sha256, release, group, env, scale, config_rev and signatures)"
		}
	}
	if path == "" {
		return fmt.Errorf("line %d: %s", tok.Position.Line, msg)
	}
	return fmt.Errorf("%s: %s (line %d)", path, msg, tok.Position.Line)
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Map, reflect.Struct:
		return "a mapping"
	case reflect.String:
		return "a string"
	case reflect.Int:
		return "a whole number"
	}
	return t.String()
}

// pathAt returns the path ("apps.web.scale") of the last mapping key that
// starts at or before offset: the key whose value or name the error is in.
func pathAt(b []byte, offset int) string {
	f, err := parser.ParseBytes(b, 0)
	if err != nil {
		return ""
	}
	var v keyFinder
	v.offset = offset
	for _, d := range f.Docs {
		ast.Walk(&v, d)
	}
	return strings.TrimPrefix(v.path, "$.")
}

type keyFinder struct {
	offset, best int
	path         string
}

func (k *keyFinder) Visit(n ast.Node) ast.Visitor {
	if mv, ok := n.(*ast.MappingValueNode); ok {
		if p := mv.Key.GetToken().Position; p != nil && p.Offset <= k.offset && p.Offset >= k.best {
			k.best, k.path = p.Offset, mv.GetPath()
		}
	}
	return k
}
