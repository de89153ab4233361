package integration

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferrydeploy/ferry/internal/store/blob/blobtest"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// bucketLog records the signed GETs that reach the S3 server, by object.
type bucketLog struct {
	mu   sync.Mutex
	gets map[string]int
}

func (b *bucketLog) count(key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gets[key]
}

// TestS3Store: a server keeping artifacts in an S3 bucket
// (--store s3://…, a real S3-compatible server) with --direct-download:
// artifacts land at artifacts/<app>/<sha256>.tar.zst, a second publish
// uploads nothing, agents fetch from the bucket itself, a rollback to a
// release they have cached fetches nothing, and ferry gc removes the
// artifact nothing released.
func TestS3Store(t *testing.T) {
	goBin := testenv.NeedCommand(t, "go")
	testenv.NeedCommand(t, "curl")
	must := fleetCLI(t)
	app := t.TempDir()
	buildHelloBin(t, goBin, app)
	os.WriteFile(filepath.Join(app, "ferry.yaml"), []byte(fleetYAML("", "")), 0o644)
	arts, sums := map[string]string{}, map[string]string{}
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
		arts[v], sums[v] = buildDir(t, app, v)
	}

	fn := newFleetNet(t, 2)
	s3srv := blobtest.StartS3(t)
	s3srv.Bucket(t, "arts", "")
	// The agents reach the bucket through a recorder on the server's
	// address (they may live in network namespaces), which counts GETs.
	target, _ := url.Parse(s3srv.Endpoint)
	bl := &bucketLog{gets: map[string]int{}}
	ln, err := net.Listen("tcp", net.JoinHostPort(fn.serverIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Query().Get("X-Amz-Signature") != "" {
			bl.mu.Lock()
			bl.gets[strings.TrimPrefix(r.URL.Path, "/arts/ferry/")]++
			bl.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	})}
	go hs.Serve(ln)
	defer hs.Close()
	storeURL := "s3://arts/ferry?endpoint=http://" + ln.Addr().String() + "&use_path_style=true&region=us-east-1&response_checksum_validation=when_required"
	srv := startFleetServer(t, fn.serverIP, "--store", storeURL, "--direct-download")
	joinAgents(t, must, fn, srv, "", "")

	key := func(v string) string { return "artifacts/hello/" + sums[v] + ".tar.zst" }
	must(0, "publish", arts["1.0.0"])
	if r := must(0, "publish", arts["1.0.0"]); !strings.Contains(r.stdout, "already on the server") {
		t.Errorf("second publish:\n%s", r.stdout)
	}
	objects := func() []string {
		out, err := s3srv.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("arts")})
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
		return keys
	}
	if keys := objects(); len(keys) != 1 || keys[0] != "ferry/"+key("1.0.0") {
		t.Fatalf("bucket holds %v, want only ferry/%s", keys, key("1.0.0"))
	}
	must(0, "deploy", "hello", "1.0.0", "--to", "prod", "--health-timeout", "20s")
	must(0, "publish", arts["2.0.0"])
	must(0, "deploy", "hello", "2.0.0", "--to", "prod", "--health-timeout", "20s")
	v1, v2 := bl.count(key("1.0.0")), bl.count(key("2.0.0"))
	if v1 < 2 || v2 < 2 {
		t.Fatalf("signed GETs from the bucket: v1 %d, v2 %d; want each agent's download straight from it", v1, v2)
	}
	if r := must(0, "rollback", "hello", "--to", "prod"); !strings.Contains(r.stdout, "every host runs v1 healthy") {
		t.Errorf("rollback:\n%s", r.stdout)
	}
	if n := bl.count(key("1.0.0")); n != v1 {
		t.Errorf("the rollback to v1 fetched it from the bucket %d more times; the agents had it cached", n-v1)
	}

	// 3.0.0 is published and never deployed: gc removes it and only it.
	must(0, "publish", arts["3.0.0"])
	r := must(0, "gc", "--keep", "0", "--min-age", "0")
	if !strings.Contains(r.stdout, "Removed 1 artifacts") || !strings.Contains(r.stdout, "3.0.0") {
		t.Errorf("gc:\n%s", r.stdout)
	}
	keys := strings.Join(objects(), " ")
	if strings.Contains(keys, sums["3.0.0"]) || !strings.Contains(keys, sums["1.0.0"]) || !strings.Contains(keys, sums["2.0.0"]) {
		t.Errorf("bucket after gc: %s", keys)
	}
}
