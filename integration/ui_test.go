package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// TestWebUI drives the web UI in a real headless Chromium against a real
// server with two agents: sign in, see the matrix, deploy a release by
// clicking, watch the cells change without a reload, roll back, see a
// masked secret, use it at phone width and from the keyboard, and be
// refused as a viewer (no button, and 403 when the form is posted
// anyway). Screenshots of each page go to the test's artifact directory
// (go test -artifacts -outputdir DIR keeps them).
func TestWebUI(t *testing.T) {
	goBin := testenv.NeedCommand(t, "go")
	testenv.NeedCommand(t, "curl")
	chromium := testenv.NeedCommand(t, "chromium")
	must := fleetCLI(t)
	app := t.TempDir()
	buildHelloBin(t, goBin, app)
	os.WriteFile(filepath.Join(app, "ferry.yaml"), []byte(fleetYAML("", "")), 0o644)
	arts := map[string]string{}
	for _, v := range []string{"1.0.0", "2.0.0"} {
		arts[v], _ = buildDir(t, app, v)
	}
	fn := newFleetNet(t, 2)
	srv := startFleetServer(t, fn.serverIP)
	joinAgents(t, must, fn, srv, "", "")
	must(0, "publish", arts["1.0.0"])
	must(0, "publish", arts["2.0.0"])
	must(0, "config", "set", "hello", "--group", "prod", "--secret", "API_KEY=hunter2-very-secret")
	must(0, "deploy", "hello", "1.0.0", "--to", "prod", "--health-timeout", "20s")
	var viewer struct{ Secret string }
	json.Unmarshal([]byte(must(0, "token", "create", "--role", "viewer", "--name", "eve", "-o", "json").stdout), &viewer)

	shots := t.ArtifactDir()
	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// The server's certificate is from its own CA, which the CLI pins
		// by hash; the browser is told to accept it.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1280, 900))...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first action starts the browser, bound to the context it gets:
	// this one, not a step's shorter one.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// page is what a failure shows; bounded, as OuterHTML waits for a
	// <main> that a broken page may never have.
	page := func() string {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		html, err := chromedp.Run(pctx, chromedp.OuterHTML(chromedp.CSS("body")))
		if err != nil {
			return fmt.Sprintf("(no page: %v)", err)
		}
		return html
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("%s: %v\npage:\n%s", what, err, page())
		}
	}
	eval := func(what, expr string) any {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	// until waits, without reloading, for a JavaScript condition.
	until := func(what, expr string, within time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
			t.Fatalf("%s: not within %s: %v\npage:\n%s", what, within, err, page())
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cellIs := func(host, label string) string {
		return fmt.Sprintf(`[...document.querySelectorAll("tr")].some(r => r.querySelector(".host")?.textContent === %q && r.querySelector("td.cell .label")?.textContent === %q && r.querySelector("td.cell .health")?.textContent === "healthy")`, host, label)
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	// Sign in.
	do("open the server", chromedp.Navigate(srv.url+"/"), chromedp.WaitVisible(css("#token")))
	shot("1-login")
	do("sign in", chromedp.SendKeys(css("#token"), srv.token), chromedp.Submit(css("#token")), chromedp.WaitVisible(css("table.matrix")))
	until("the matrix shows both hosts on v1", cellIs("web-1", "v1")+" && "+cellIs("web-2", "v1"), 30*time.Second)
	shot("2-overview")

	// Deploy 2.0.0 by clicking; confirm; the deployment page follows it live.
	do("app page", chromedp.Navigate(srv.url+"/apps/hello"), chromedp.WaitVisible(css(`[data-test="deploy-2.0.0"]`)))
	shot("3-app")
	do("deploy 2.0.0", chromedp.Click(css(`[data-test="deploy-2.0.0"]`)), chromedp.WaitVisible(css("#question")))
	if q, _ := chromedp.Run(ctx, chromedp.Text(css("#question"))); !strings.HasPrefix(q, "Deploy hello 2.0.0 (artifact ") || !strings.HasSuffix(q, ", with the newest config) to prod?") {
		t.Errorf("the confirmation says %q", q)
	}
	shot("4-confirm")
	do("confirm", chromedp.Click(css(`[data-test="confirm"]`)), chromedp.WaitVisible(css("#deploy-state")))
	eval("mark the page", `window.ferryMark = 1`)
	until("the deployment page says succeeded, without a reload", `document.querySelector("#deploy-state").textContent === "succeeded" && window.ferryMark === 1`, 60*time.Second)
	shot("5-deployment")

	// The overview, open while the CLI rolls back, changes by itself.
	do("open the overview", chromedp.Navigate(srv.url+"/"), chromedp.WaitVisible(css("table.matrix")))
	eval("mark the page", `window.ferryMark = 2`)
	until("the matrix shows v2", cellIs("web-1", "v2")+" && "+cellIs("web-2", "v2"), 30*time.Second)
	var rb struct{ ID string }
	if err := json.Unmarshal([]byte(must(0, "rollback", "hello", "--to", "prod", "--detach", "-o", "json").stdout), &rb); err != nil || rb.ID == "" {
		t.Fatalf("rollback --detach -o json: %v", err)
	}
	until("the matrix changes to v1 without a reload", cellIs("web-1", "v1")+" && "+cellIs("web-2", "v1")+" && window.ferryMark === 2", 60*time.Second)
	// The hosts report v1 before the server records the rollback's end,
	// which is when v1 becomes the group's release: wait for that, not
	// for the matrix, before asking what a rollback would do next.
	waitDeployment(t, srv, rb.ID, 60*time.Second, "succeeded")

	// Roll back from the browser: the last release healthy everywhere
	// before v1 is v2 (which ferry rollback --dry-run says too).
	if out := must(0, "rollback", "hello", "--to", "prod", "--dry-run").stdout; out != "would roll hello on prod back from v1 to v2\n" {
		t.Errorf("ferry rollback --dry-run said %q", out)
	}
	do("app page", chromedp.Navigate(srv.url+"/apps/hello"), chromedp.WaitVisible(css(`[data-test="rollback-prod"]`)))
	do("roll back", chromedp.Click(css(`[data-test="rollback-prod"]`)), chromedp.WaitVisible(css(`[data-test="confirm"]`)))
	if q := eval("the question", `document.querySelector("#question").textContent`); !strings.Contains(fmt.Sprint(q), "back from v1 to hello v2 (2.0.0)") {
		t.Errorf("the rollback confirmation asks %q; want it to name v1 and v2", q)
	}
	do("confirm the rollback", chromedp.Click(css(`[data-test="confirm"]`)), chromedp.WaitVisible(css("#deploy-state")))
	until("the rollback succeeds", `document.querySelector("#deploy-state").textContent === "succeeded"`, 60*time.Second)
	do("overview", chromedp.Navigate(srv.url+"/"), chromedp.WaitVisible(css("table.matrix")))
	until("the matrix shows v2 again", cellIs("web-1", "v2")+" && "+cellIs("web-2", "v2"), 30*time.Second)

	// Logs, from the CLI and the browser.
	r := must(0, "logs", "hello")
	for _, want := range []string{"web-1 web.1 | ", "web-2 web.1 | ", "listening on"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("ferry logs hello lacks %q:\n%s", want, r.stdout)
		}
	}
	r = must(0, "logs", "hello", "--host", "web-2", "-n", "3", "-o", "json")
	if got := strings.Count(r.stdout, "\n"); got == 0 || got > 3 || strings.Contains(r.stdout, `"host":"web-1"`) {
		t.Errorf("ferry logs --host web-2 -n 3: %d lines:\n%s", got, r.stdout)
	}
	follow := exec.Command(ferryBin, "logs", "hello", "--host", "web-1", "-f")
	out, _ := follow.StdoutPipe()
	follow.Stderr = os.Stderr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followed := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			followed <- sc.Text()
		}
		close(followed)
	}()
	// listening waits for a line saying an instance listens; with old
	// set, only one logged after the lines already printed.
	listening := func(within, _ time.Duration) bool {
		deadline := time.After(within)
		for {
			select {
			case l := <-followed:
				if strings.Contains(l, "listening on") {
					return true
				}
			case <-deadline:
				return false
			}
		}
	}
	if !listening(5*time.Second, 0) {
		t.Fatal("ferry logs -f printed no listening line within 5s")
	}
	// Drain what the tail printed first, then make a new instance start.
	for drained := false; !drained; {
		select {
		case <-followed:
		case <-time.After(500 * time.Millisecond):
			drained = true
		}
	}
	must(0, "rollback", "hello", "--to", "prod", "--detach")
	if !listening(30*time.Second, 0) {
		t.Error("ferry logs -f did not print the new instance's listening line after a rollback")
	}
	follow.Process.Kill()
	follow.Wait()
	var other struct{ Secret string }
	json.Unmarshal([]byte(must(0, "token", "create", "--role", "viewer", "--apps", "other", "--name", "other-viewer", "-o", "json").stdout), &other)
	if r, _ := fleetRun(context.Background(), []string{"FERRY_TOKEN=" + other.Secret}, "logs", "hello"); r.code == 0 || !strings.Contains(r.stderr, "may not") && !strings.Contains(r.stderr, "forbidden") && !strings.Contains(r.stderr, "not allowed") {
		t.Errorf("ferry logs hello with a token for another app: exit %d: %s", r.code, r.stderr)
	}
	do("logs page", chromedp.Navigate(srv.url+"/apps/hello/logs"), chromedp.WaitVisible(css("pre.log")))
	until("the logs page shows both hosts", `document.querySelector("pre.log").textContent.includes("web-1 web.1") && document.querySelector("pre.log").textContent.includes("web-2 web.1")`, 20*time.Second)
	shot("6-logs")

	// The secret is masked.
	do("config page", chromedp.Navigate(srv.url+"/apps/hello/config?group=prod"), chromedp.WaitVisible(css("main table")))
	if cfg := page(); strings.Contains(cfg, "hunter2") || !strings.Contains(cfg, "••••") {
		t.Errorf("config page: the secret is not masked:\n%s", cfg)
	}
	shot("6-config")
	do("audit", chromedp.Navigate(srv.url+"/audit?app=hello"), chromedp.WaitVisible(css("main table")))
	shot("7-audit")

	// Keyboard: tabbing from the top of the app page reaches a deploy
	// button, and Enter on it opens the confirmation.
	do("app page", chromedp.Navigate(srv.url+"/apps/hello"), chromedp.WaitVisible(css(`[data-test="deploy-v1"]`)))
	reached := false
	for range 80 {
		do("tab", chromedp.KeyEvent("\t"))
		if eval("focus", `document.activeElement?.dataset?.test || ""`) == "deploy-v1" {
			reached = true
			break
		}
	}
	if !reached {
		t.Fatal("80 tabs did not reach the deploy button of v1")
	}
	do("enter", chromedp.KeyEvent("\r"), chromedp.WaitVisible(css(`[data-test="confirm"]`)))

	// Phone width: nothing wider than the screen; wide tables scroll.
	do("phone", chromedp.EmulateViewport(390, 844), chromedp.Navigate(srv.url+"/"), chromedp.WaitVisible(css("table.matrix")))
	if wide := eval("width", `document.documentElement.scrollWidth > window.innerWidth`); wide != false {
		t.Error("at 390 px the overview is wider than the screen")
	}
	shot("8-phone")
	do("desktop", chromedp.EmulateViewport(1280, 900))

	// A viewer: no buttons, and the form refused if posted anyway.
	do("sign out", chromedp.Navigate(srv.url+"/"), chromedp.WaitVisible(css(`form[action="/logout"] button`)),
		chromedp.Click(css(`form[action="/logout"] button`)), chromedp.WaitVisible(css("#token")))
	do("sign in as viewer", chromedp.SendKeys(css("#token"), viewer.Secret), chromedp.Submit(css("#token")),
		chromedp.WaitVisible(css("table.matrix")), chromedp.Navigate(srv.url+"/apps/hello"), chromedp.WaitVisible(css("#releases")))
	if n := eval("count buttons", `document.querySelectorAll('[data-test^="deploy-"], [data-test^="rollback-"]').length`); n != float64(0) {
		t.Errorf("a viewer sees %v deploy or rollback buttons", n)
	}
	shot("9-viewer")
	status := eval("post anyway", `fetch("/apps/hello/deploy", {method: "POST", body: new URLSearchParams({csrf: document.querySelector('input[name=csrf]').value, release: "1", group: "prod", confirm: "yes"})}).then(r => r.status)`)
	if status != float64(403) {
		t.Errorf("a viewer's deploy form: %v, want 403", status)
	}
	t.Logf("screenshots in %s", shots)
	if out, err := exec.Command("ls", shots).Output(); err == nil {
		t.Logf("%s", out)
	}
}
