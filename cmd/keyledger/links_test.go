package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

var (
	mdLink    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdHeading = regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`)
	mdFence   = regexp.MustCompile("(?s)```.*?```")
)

// slug is the anchor GitHub gives a heading: lower case, punctuation
// dropped, spaces to hyphens.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

func anchors(t *testing.T, path string) map[string]bool {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range mdHeading.FindAllStringSubmatch(mdFence.ReplaceAllString(string(raw), ""), -1) {
		out[slug(m[1])] = true
	}
	return out
}

// TestMarkdownLinksStayInTheRepository: every relative link in the
// repository's Markdown files points to a file of the repository, and an
// anchor to a heading of it; none leads outside (../shared, say), which a
// reader of the repository does not have.
func TestMarkdownLinksStayInTheRepository(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if err == nil && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return nil
	})
	if len(files) < 5 {
		t.Fatalf("found %d Markdown files under %s", len(files), root)
	}
	checked := 0
	defer func() { t.Logf("%d relative links in %d Markdown files", checked, len(files)) }()
	for _, file := range files {
		raw, _ := os.ReadFile(file)
		text := mdFence.ReplaceAllString(string(raw), "")
		if strings.Contains(text, "../shared") {
			t.Errorf("%s refers to ../shared, outside the repository", rel(root, file))
		}
		for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			path, anchor, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Clean(filepath.Join(filepath.Dir(file), path))
			}
			if !strings.HasPrefix(dest, root+string(filepath.Separator)) {
				t.Errorf("%s: %s leads outside the repository", rel(root, file), target)
				continue
			}
			info, err := os.Stat(dest)
			if err != nil {
				t.Errorf("%s: %s: no such file", rel(root, file), target)
				continue
			}
			if anchor != "" && !info.IsDir() && strings.HasSuffix(dest, ".md") && !anchors(t, dest)[anchor] {
				t.Errorf("%s: %s: no such heading in %s", rel(root, file), target, rel(root, dest))
			}
		}
	}
}

func rel(root, path string) string {
	r, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return r
}
