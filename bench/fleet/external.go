package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// infra are the processes the bench starts besides the agents' apps (the
// ferry server with -server-bin, the S3 server with -s3): not leftovers.
var infra sync.Map // pid → true

// proc is a process the bench started and measures: its CPU time and the
// bytes it wrote (files and sockets: /proc/PID/io wchar).
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(name string, logPath string, env []string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	infra.Store(cmd.Process.Pid, true)
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

// stop SIGTERMs the process and SIGKILLs it after 10 s.
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	infra.Delete(p.cmd.Process.Pid)
}

// usage is a process's CPU time and bytes written so far.
type usage struct {
	CPU   time.Duration `json:"cpu"`
	Wrote int64         `json:"wrote"`
}

func (p *proc) usage() usage {
	if p == nil {
		return usage{}
	}
	var u usage
	pid := strconv.Itoa(p.cmd.Process.Pid)
	if b, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil {
		// Fields after the ")" that ends comm: utime and stime are the
		// 12th and 13th, in clock ticks (100 Hz on Linux).
		if i := bytes.LastIndexByte(b, ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				u.CPU = time.Duration(ut+st) * 10 * time.Millisecond
			}
		}
	}
	if b, err := os.ReadFile("/proc/" + pid + "/io"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "wchar: "); ok {
				u.Wrote, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return u
}

func (u usage) sub(v usage) usage { return usage{CPU: u.CPU - v.CPU, Wrote: u.Wrote - v.Wrote} }

// startServer runs `BIN server` on loopback and reads its URL, admin token
// and CA pin from the login line it prints at first start.
func startServer(ctx context.Context, bin, data, logDir string, extra []string) (p *proc, url, token, ca string, err error) {
	out := filepath.Join(logDir, "server.out")
	args := append([]string{"server", "--data", data, "--listen", "127.0.0.1:0", "--log-level", "warn"}, extra...)
	if p, err = startProc(bin, out, nil, args...); err != nil {
		return nil, "", "", "", err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			// ferry login URL --token T --ca-sha256 H
			f := strings.Fields(sc.Text())
			if len(f) == 7 && f[0] == "ferry" && f[1] == "login" && f[3] == "--token" && f[5] == "--ca-sha256" {
				return p, f[2], f[4], f[6], nil
			}
		}
		select {
		case <-p.done:
			return nil, "", "", "", fmt.Errorf("%s server exited at start:\n%s", bin, b)
		case <-ctx.Done():
			p.stop()
			return nil, "", "", "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, "", "", "", fmt.Errorf("%s server printed no login line within 30s:\n%s", bin, b)
		}
	}
}

// The S3 server's credentials, handed to the ferry server in its
// environment as the AWS SDK reads them.
const (
	s3Access = "fleetbench"
	s3Secret = "fleetbenchsecret"
)

// startS3 runs versitygw (from PATH; scripts/install-deps.sh builds it)
// with its posix backend in dir, makes bucket "bench" and returns the
// --store URL of prefix ferry/ in it.
func startS3(ctx context.Context, dir string) (*proc, string, error) {
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		return nil, "", errors.New("-s3: versitygw is not in PATH (scripts/install-deps.sh builds it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	addr := l.Addr().String()
	l.Close()
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, "", err
	}
	p, err := startProc(bin, filepath.Join(dir, "versitygw.log"), []string{"ROOT_ACCESS_KEY=" + s3Access, "ROOT_SECRET_KEY=" + s3Secret},
		"--port", addr, "posix", filepath.Join(dir, "data"))
	if err != nil {
		return nil, "", err
	}
	cli := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://" + addr), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(s3Access, s3Secret, "")})
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cli.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("bench")})
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, "", fmt.Errorf("versitygw on %s: create bucket: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p, "s3://bench/ferry?endpoint=http://" + addr + "&use_path_style=true&region=us-east-1&response_checksum_validation=when_required", nil
}
