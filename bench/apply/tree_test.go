package main

import (
	"path/filepath"
	"testing"
)

var tinySpec = Spec{Seed: 7, LargeFiles: 2, LargeSize: 64 << 10, SmallFiles: 50, SmallMin: 100, SmallMax: 900, ChangeFrac: 0.1}

func TestGenerateIsDeterministic(t *testing.T) {
	for _, format := range []string{"tar.gz", "tar.zst"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			a1, err := tinySpec.Generate(0).Pack(filepath.Join(dir, "1."+format), format, tinySpec.Seed)
			if err != nil {
				t.Fatal(err)
			}
			a2, err := tinySpec.Generate(0).Pack(filepath.Join(dir, "2."+format), format, tinySpec.Seed)
			if err != nil {
				t.Fatal(err)
			}
			if a1.SHA256 != a2.SHA256 || a1.SHA1 != a2.SHA1 {
				t.Errorf("two packs of the same spec differ: %s vs %s", a1.SHA256, a2.SHA256)
			}
			if len(a1.SHA1) != 40 || len(a1.SHA256) != 64 {
				t.Errorf("digests %q %q", a1.SHA1, a1.SHA256)
			}
		})
	}
}

func TestVariantBChangesWhatItSays(t *testing.T) {
	dir := t.TempDir()
	a, err := tinySpec.Generate(0).Pack(filepath.Join(dir, "a.tar.gz"), "tar.gz", tinySpec.Seed)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tinySpec.Generate(1).Pack(filepath.Join(dir, "b.tar.gz"), "tar.gz", tinySpec.Seed)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Files) != len(b.Files) {
		t.Fatalf("A has %d files, B %d", len(a.Files), len(b.Files))
	}
	var small, large int
	for name, sum := range a.Files {
		if b.Files[name] == sum {
			continue
		}
		if filepath.Ext(name) == ".txt" {
			small++
		} else {
			large++
		}
	}
	if want := 5; small != want || large != 1 {
		t.Errorf("B changes %d small and %d large files; want %d and 1", small, large, want)
	}
}
