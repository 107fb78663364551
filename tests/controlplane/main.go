// Command kube-controlplane runs etcd, kube-apiserver and a trimmed kube-controller-manager in one
// process, on loopback only, so the project's tests can talk to a real Kubernetes API on a machine
// without Docker (no kind, no envtest downloads).
//
//	kube-controlplane --data-dir DIR [--secure-port N] [--etcd-client-port N --etcd-peer-port N]
//
// DIR receives the certificates, the etcd data, DIR/kubeconfig (admin) and, once the API is ready
// and the controllers run, DIR/ready holding the server URL. SIGTERM or SIGINT stops everything.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/controller/job"
)

// Faster Job retries: upstream waits 10 s doubling to 10 min before recreating a failed Pod,
// which would make every backoffLimit test slow. The values are package variables for tests.
const (
	jobPodFailureBackOff    = time.Second
	maxJobPodFailureBackOff = 10 * time.Second
)

type settings struct {
	dataDir        string
	securePort     int
	etcdClientPort int
	etcdPeerPort   int
	exitWithParent bool
}

func main() {
	var s settings
	fs := flag.NewFlagSet("kube-controlplane", flag.ExitOnError)
	fs.StringVar(&s.dataDir, "data-dir", "", "directory for certificates, etcd data, kubeconfig and the ready marker (required)")
	fs.IntVar(&s.securePort, "secure-port", 0, "apiserver HTTPS port on 127.0.0.1 (0 = pick a free port)")
	fs.IntVar(&s.etcdClientPort, "etcd-client-port", 0, "etcd client port on 127.0.0.1 (0 = pick a free port)")
	fs.IntVar(&s.etcdPeerPort, "etcd-peer-port", 0, "etcd peer port on 127.0.0.1 (0 = pick a free port)")
	fs.BoolVar(&s.exitWithParent, "exit-with-parent", false, "stop cleanly when the parent process goes away (a killed test run leaves nothing behind)")
	_ = fs.Parse(os.Args[1:])
	if s.dataDir == "" {
		fmt.Fprintln(os.Stderr, "kube-controlplane: --data-dir is required")
		os.Exit(2)
	}
	if err := run(s); err != nil {
		klog.ErrorS(err, "control plane failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(s settings) error {
	job.DefaultJobPodFailureBackOff = jobPodFailureBackOff
	job.MaxJobPodFailureBackOff = maxJobPodFailureBackOff

	dir, err := filepath.Abs(s.dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// A ready marker from an earlier run must not fool a caller waiting for this one.
	readyFile := filepath.Join(dir, "ready")
	if err := os.Remove(readyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	certs := pki{dir: filepath.Join(dir, "pki")}
	if err := certs.ensure(); err != nil {
		return err
	}
	for _, p := range []*int{&s.securePort, &s.etcdClientPort, &s.etcdPeerPort} {
		if *p == 0 {
			if *p, err = freePort(); err != nil {
				return err
			}
		}
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", s.securePort)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, certs); err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}

	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	etcd, err := startEtcd(sigCtx, filepath.Join(dir, "etcd"), s.etcdClientPort, s.etcdPeerPort)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()

	// Everything below runs until ctx ends; the first component to fail ends it for the others.
	ctx, cancel := context.WithCancelCause(sigCtx)
	defer cancel(nil)
	if s.exitWithParent {
		go watchParent(ctx, cancel)
	}
	apiDone := make(chan error, 1)
	go func() {
		err := runAPIServer(ctx, apiServerFlags(s, certs))
		apiDone <- err
		cancel(fmt.Errorf("kube-apiserver stopped: %w", err))
	}()
	go func() {
		select {
		case err := <-etcd.Err():
			cancel(fmt.Errorf("etcd: %w", err))
		case <-ctx.Done():
		}
	}()

	if err := waitReady(ctx, server, certs); err != nil {
		cancel(err)
		<-apiDone
		return context.Cause(ctx)
	}
	kcmDone := make(chan struct{})
	go func() {
		defer close(kcmDone)
		if err := runControllerManager(ctx, kubeconfig, certs); err != nil {
			cancel(fmt.Errorf("kube-controller-manager: %w", err))
		}
	}()
	if err := writeAtomic(readyFile, []byte(server+"\n"), 0o644); err != nil {
		cancel(err)
	} else {
		klog.InfoS("control plane ready", "server", server, "kubeconfig", kubeconfig)
	}

	<-ctx.Done()
	cause := context.Cause(ctx)
	klog.InfoS("stopping control plane", "reason", cause)
	_ = os.Remove(readyFile)
	select {
	case <-kcmDone:
	case <-time.After(15 * time.Second):
		klog.Info("controller manager did not stop within 15s; going on")
	}
	select {
	case <-apiDone:
	case <-time.After(30 * time.Second):
		klog.Info("apiserver did not stop within 30s; going on")
	}
	// etcd.Close runs through the defer above.
	if sigCtx.Err() != nil || errors.Is(cause, errParentGone) {
		return nil // stopped as asked
	}
	return cause
}

// watchParent ends the control plane once this process is re-parented, i.e. its parent died
// without stopping it (a test run killed by a timeout, say).
func watchParent(ctx context.Context, cancel context.CancelCauseFunc) {
	parent := os.Getppid()
	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if os.Getppid() != parent {
				cancel(errParentGone)
				return
			}
		}
	}
}

var errParentGone = errors.New("the parent process is gone")

// freePort asks the kernel for an unused loopback port; the window before it is bound again is tiny.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeKubeconfig embeds the certificates so the file works when copied elsewhere.
func writeKubeconfig(path, server string, certs pki) error {
	read := func(name string) (string, error) {
		b, err := os.ReadFile(name)
		if err != nil {
			return "", err
		}
		return b64(b), nil
	}
	ca, err := read(certs.CACert())
	if err != nil {
		return err
	}
	crt, err := read(certs.AdminCert())
	if err != nil {
		return err
	}
	key, err := read(certs.AdminKey())
	if err != nil {
		return err
	}
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lamassu-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: lamassu-test
  context:
    cluster: lamassu-test
    user: admin
current-context: lamassu-test
`, server, ca, crt, key)
	return writeAtomic(path, []byte(content), 0o600)
}
