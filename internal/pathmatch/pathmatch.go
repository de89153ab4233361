// Package pathmatch matches relative paths against rsync-style exclude
// patterns, the syntax stretcher manifests and ferry.yaml's exclude use.
//
//   - a pattern without a slash matches the last component: "*.pid"
//   - a trailing slash matches directories only: "tmp/"
//   - a leading slash anchors at the root: "/config/local.yml"
//   - any other slash matches the end of the path: "log/*.gz"
//   - "*" and "?" stop at slashes, "**" does not, [a-z] is a class.
//
// A matched directory excludes everything below it; callers stop walking.
package pathmatch

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
)

// Matcher is a compiled list of patterns; the zero value matches nothing.
type Matcher struct {
	pats []pattern
}

type pattern struct {
	re       *regexp.Regexp
	dirOnly  bool
	fullPath bool
}

// New compiles patterns; blank ones are ignored.
func New(patterns ...string) (*Matcher, error) {
	m := &Matcher{}
	for _, p := range patterns {
		if err := m.Add(p); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Add compiles one more pattern.
func (m *Matcher) Add(p string) error {
	p = strings.TrimSpace(p)
	if p == "" {
		return nil
	}
	var pt pattern
	if strings.HasSuffix(p, "/") {
		pt.dirOnly = true
		p = strings.TrimRight(p, "/")
		if p == "" {
			return fmt.Errorf("pattern %q matches nothing", "/")
		}
	}
	anchored := strings.HasPrefix(p, "/")
	p = strings.TrimLeft(p, "/")
	pt.fullPath = anchored || strings.Contains(p, "/") || strings.Contains(p, "**")
	body, err := translate(p)
	if err != nil {
		return fmt.Errorf("pattern %q: %w", p, err)
	}
	switch {
	case anchored || !pt.fullPath:
		body = "^" + body + "$"
	default:
		body = "(^|/)" + body + "$"
	}
	if pt.re, err = regexp.Compile(body); err != nil {
		return fmt.Errorf("pattern %q: %w", p, err)
	}
	m.pats = append(m.pats, pt)
	return nil
}

// AddFrom adds one pattern per line of r; lines starting with # or ; are
// comments, as in rsync's --exclude-from.
func (m *Matcher) AddFrom(r io.Reader) error {
	s := bufio.NewScanner(r)
	for s.Scan() {
		l := strings.TrimSpace(s.Text())
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		if err := m.Add(l); err != nil {
			return err
		}
	}
	return s.Err()
}

// Match reports whether rel, a slash-separated path relative to the root,
// is excluded.
func (m *Matcher) Match(rel string, isDir bool) bool {
	if m == nil {
		return false
	}
	for _, p := range m.pats {
		if p.dirOnly && !isDir {
			continue
		}
		s := rel
		if !p.fullPath {
			s = path.Base(rel)
		}
		if p.re.MatchString(s) {
			return true
		}
	}
	return false
}

// Empty reports whether m has no patterns.
func (m *Matcher) Empty() bool { return m == nil || len(m.pats) == 0 }

func translate(p string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch c {
		case '*':
			if i+1 < len(p) && p[i+1] == '*' {
				b.WriteString(".*")
				i++
			} else {
				b.WriteString("[^/]*")
			}
		case '?':
			b.WriteString("[^/]")
		case '[':
			j := strings.IndexByte(p[i+1:], ']')
			if j < 0 {
				return "", fmt.Errorf("unclosed [")
			}
			class := p[i+1 : i+1+j]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += j + 1
		case '\\':
			if i+1 < len(p) {
				i++
				b.WriteString(regexp.QuoteMeta(string(p[i])))
			}
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return b.String(), nil
}
