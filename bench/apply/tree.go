package main

import (
	"archive/tar"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/ferrydeploy/ferry/internal/artifact"
)

// Spec says what artifact tree to generate. The same Spec always gives the
// same bytes.
type Spec struct {
	Seed       uint64
	LargeFiles int   // incompressible pseudo-random files
	LargeSize  int64 // bytes each
	SmallFiles int   // hex text files in nested directories
	SmallMin   int   // bytes
	SmallMax   int   // bytes
	ChangeFrac float64
}

// DefaultSpec is ~80 MB of large files plus ~5,000 small ones: ~100 MB.
var DefaultSpec = Spec{
	Seed:       1,
	LargeFiles: 4,
	LargeSize:  20 << 20,
	SmallFiles: 5000,
	SmallMin:   1 << 10,
	SmallMax:   8 << 10,
	ChangeFrac: 0.10,
}

// Mtimes: a reproducible build stamps unchanged files with the same time;
// a file whose content changed gets a newer one, so rsync's quick check
// (size and mtime) sees it.
var (
	mtimeA = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	mtimeB = mtimeA.Add(24 * time.Hour)
)

// File is one entry of a generated tree.
type File struct {
	Name  string // slash-separated, relative
	Size  int64
	Mode  int64
	Mtime time.Time
	Text  bool   // hex text (compressible) rather than raw random bytes
	Seed  uint64 // content seed
	Link  string // symlink target; then Size is 0
}

// Tree is a generated artifact tree: files sorted by name.
type Tree []File

// Generate returns the tree of variant 0 (artifact A) or 1 (artifact B:
// ChangeFrac of the small files and one large file have new content, a new
// size and a newer mtime; everything else is as in A).
func (s Spec) Generate(variant int) Tree {
	rng := rand.New(rand.NewPCG(s.Seed, 0x5eed))
	var t Tree
	for i := range s.LargeFiles {
		f := File{Name: fmt.Sprintf("data/blob-%02d.bin", i), Size: s.LargeSize, Mode: 0o644, Mtime: mtimeA, Seed: uint64(i) << 1}
		if i == 0 {
			f.Name, f.Mode = "bin/app", 0o755
		}
		if variant == 1 && i == s.LargeFiles-1 {
			f.Seed |= 1
			f.Mtime = mtimeB
		}
		t = append(t, f)
	}
	// Which small files B changes: a fixed-size, seeded sample, drawn from
	// its own generator so A's and B's sizes come from the same sequence.
	changed := map[int]bool{}
	if variant == 1 {
		perm := rand.New(rand.NewPCG(s.Seed, 0xc4a9)).Perm(s.SmallFiles)
		for _, i := range perm[:int(float64(s.SmallFiles)*s.ChangeFrac+0.5)] {
			changed[i] = true
		}
	}
	span := max(s.SmallMax-s.SmallMin+1, 1)
	for i := range s.SmallFiles {
		size := s.SmallMin + rng.IntN(span)
		f := File{
			Name:  fmt.Sprintf("src/pkg%02d/sub%d/f%04d.txt", i%25, (i/25)%8, i),
			Size:  int64(size),
			Mode:  0o644,
			Mtime: mtimeA,
			Text:  true,
			Seed:  uint64(1000+i) << 1,
		}
		if changed[i] {
			f.Size = int64(s.SmallMin + (size-s.SmallMin+span/2)%span)
			f.Seed |= 1
			f.Mtime = mtimeB
		}
		t = append(t, f)
	}
	t = append(t, File{Name: "bin/current", Link: "app", Mode: 0o777, Mtime: mtimeA})
	sort.Slice(t, func(i, j int) bool { return t[i].Name < t[j].Name })
	return t
}

// Bytes is the total size of the tree's regular files.
func (t Tree) Bytes() int64 {
	var n int64
	for _, f := range t {
		n += f.Size
	}
	return n
}

// Dirs is the number of directories the tree's files are in.
func (t Tree) Dirs() int {
	dirs := map[string]bool{}
	for _, f := range t {
		for d := path.Dir(f.Name); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	return len(dirs)
}

// WriteContent writes f's content to w.
func (f File) WriteContent(w io.Writer, seed uint64) error {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], seed)
	binary.LittleEndian.PutUint64(key[8:], f.Seed)
	src := rand.NewChaCha8(key)
	buf, raw := make([]byte, 64<<10), make([]byte, 32<<10)
	for left := f.Size; left > 0; {
		n := int(min(left, int64(len(buf))))
		if f.Text {
			// Hex: about as compressible as source code or minified assets.
			r := raw[:(n+1)/2]
			src.Read(r)
			hex.Encode(buf, r)
		} else {
			src.Read(buf[:n])
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		left -= int64(n)
	}
	return nil
}

// Artifact is a packed tree on disk.
type Artifact struct {
	Path   string
	Format string // tar.gz or tar.zst
	Size   int64
	SHA1   string
	SHA256 string
	Files  map[string]string // name -> sha256 of the content, or "-> target" for a symlink
}

// Pack writes t into path as a tar.gz or tar.zst archive with a directory
// entry for every directory, and returns its digests.
func (t Tree) Pack(path string, format string, seed uint64) (*Artifact, error) {
	out, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	defer out.Close()
	s1, s256 := sha1.New(), sha256.New()
	cnt := &countWriter{}
	w := io.MultiWriter(out, s1, s256, cnt)
	var cw io.WriteCloser
	switch format {
	case "tar.gz":
		gw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
		if err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
		gw.ModTime = time.Unix(0, 0)
		cw = gw
	case "tar.zst":
		// As artifact.Pack, i.e. `ferry build`, packs: the window decides
		// the decoder's memory.
		zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithWindowSize(artifact.PackWindow))
		if err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
		cw = zw
	default:
		return nil, fmt.Errorf("pack: unknown format %q", format)
	}
	a := &Artifact{Path: path, Format: format, Files: map[string]string{}}
	if err := t.writeTar(cw, seed, a.Files); err != nil {
		return nil, fmt.Errorf("pack %s: %w", path, err)
	}
	if err := cw.Close(); err != nil {
		return nil, fmt.Errorf("pack %s: %w", path, err)
	}
	if err := out.Close(); err != nil {
		return nil, fmt.Errorf("pack %s: %w", path, err)
	}
	a.Size, a.SHA1, a.SHA256 = cnt.n, hex.EncodeToString(s1.Sum(nil)), hex.EncodeToString(s256.Sum(nil))
	return a, nil
}

func (t Tree) writeTar(w io.Writer, seed uint64, sums map[string]string) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	var mkdirs func(dir string) error
	mkdirs = func(dir string) error {
		if dir == "." || dirs[dir] {
			return nil
		}
		if err := mkdirs(path.Dir(dir)); err != nil {
			return err
		}
		dirs[dir] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: mtimeA, Format: tar.FormatPAX})
	}
	for _, f := range t {
		if err := mkdirs(path.Dir(f.Name)); err != nil {
			return err
		}
		h := &tar.Header{Name: f.Name, Mode: f.Mode, ModTime: f.Mtime, Format: tar.FormatPAX}
		if f.Link != "" {
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
			sums[f.Name] = "-> " + f.Link
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		h.Typeflag, h.Size = tar.TypeReg, f.Size
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		s := sha256.New()
		if err := f.WriteContent(io.MultiWriter(tw, s), seed); err != nil {
			return err
		}
		sums[f.Name] = hex.EncodeToString(s.Sum(nil))
	}
	return tw.Close()
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// hashFile returns the hex sha256 of the file at p.
func hashFile(p string) (string, error) {
	h := sha256.New()
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
