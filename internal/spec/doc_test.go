package spec

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// docPath is the page that documents ferry.yaml for users.
const docPath = "../../docs/ferry-yaml.md"

// fileKeys lists every key Parse accepts, as dotted paths (a map's keys
// are <name>), from the yaml tags of the types it decodes into: a key added
// to the parser is a key this list has.
func fileKeys() []string {
	var keys []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Struct:
			for i := 0; i < t.NumField(); i++ {
				name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
				if name == "" || name == "-" {
					continue
				}
				key := strings.TrimPrefix(prefix+"."+name, ".")
				keys = append(keys, key)
				walk(key, t.Field(i).Type)
			}
		case reflect.Map:
			walk(prefix+".<name>", t.Elem())
		}
	}
	walk("", reflect.TypeOf(fileYAML{}))
	return keys
}

var yamlBlock = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// TestDocumentedKeys holds docs/ferry-yaml.md to the parser: every yaml
// example on the page parses, the examples together use every key, and
// the reference table has a row for every key.
func TestDocumentedKeys(t *testing.T) {
	b, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	blocks := yamlBlock.FindAllStringSubmatch(doc, -1)
	if len(blocks) < 2 {
		t.Fatalf("%s has %d yaml examples", docPath, len(blocks))
	}
	used := map[string]bool{}
	for _, m := range blocks {
		if _, err := Parse([]byte(m[1])); err != nil {
			t.Errorf("an example in %s does not parse: %v\n%s", docPath, err, m[1])
			continue
		}
		var v any
		if err := yaml.Unmarshal([]byte(m[1]), &v); err != nil {
			t.Fatal(err)
		}
		usedKeys("", v, used)
	}
	keys := fileKeys()
	if len(keys) < 30 {
		t.Fatalf("found only %d keys: %v", len(keys), keys)
	}
	for _, k := range keys {
		if !strings.Contains(doc, "| `"+k+"` |") {
			t.Errorf("%s has no reference row for `%s`", docPath, k)
		}
		if !used[k] {
			t.Errorf("no example in %s uses %s", docPath, k)
		}
	}
	// And the page documents no key the parser does not know.
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(doc, -1) {
		if !slices.Contains(keys, m[1]) {
			t.Errorf("%s documents `%s`, which ferry.yaml does not have", docPath, m[1])
		}
	}
}

// usedKeys adds the dotted paths of v's keys to used; the keys under
// processes: are process names, written <name> as fileKeys does.
func usedKeys(prefix string, v any, used map[string]bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, sub := range m {
		key := strings.TrimPrefix(prefix+"."+k, ".")
		if prefix == "processes" {
			key = "processes.<name>"
		} else {
			used[key] = true
		}
		usedKeys(key, sub, used)
	}
}
