package client

import "testing"

// ArtifactFile is what UploadArtifact reads.
type ArtifactFile = artifactFile

// SetOpenArtifact makes UploadArtifact open its file with open until the
// test ends, so a test can count the file's reads.
func SetOpenArtifact(t testing.TB, open func(string) (ArtifactFile, error)) {
	old := openArtifact
	openArtifact = open
	t.Cleanup(func() { openArtifact = old })
}
