package main

// kube-controller-manager with only the controllers the tests rely on. Node lifecycle, taint
// eviction and pod GC stay off so the pod runner's fake Node is never tainted or its Pods evicted.

import (
	"context"

	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
)

var enabledControllers = []string{
	"job-controller",
	"garbage-collector-controller",
	"namespace-controller",
	// With the ServiceAccount admission plugin on, Pods are refused until a namespace has its
	// "default" ServiceAccount and the kube-root-ca.crt ConfigMap; these two create them.
	"serviceaccount-controller",
	"root-ca-certificate-publisher-controller",
	"ttl-after-finished-controller",
	// Fills the aggregated ClusterRoles (admin, edit, view); without it they grant nothing.
	"clusterrole-aggregation-controller",
	// Workloads as a cluster runs them: the operator's Deployment (from its Helm chart) gets its
	// Pod from a ReplicaSet, so killing the operator is deleting its Pod; Lamassu's ca is a
	// Deployment and its kms a StatefulSet (with the filesystem engine's volumeClaimTemplate), so
	// a restore scales real workloads down and back and waits on the status these controllers
	// report. They need nothing else: PVCs need no binding, as the pod runner only checks that
	// the claim exists.
	"deployment-controller",
	"replicaset-controller",
	"statefulset-controller",
}

// runControllerManager blocks until ctx ends. Fields are set directly: calling the options'
// Flags() next to the apiserver's would register the shared feature-gate flags twice and panic.
func runControllerManager(ctx context.Context, kubeconfig string, certs pki) error {
	s, err := options.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	s.Generic.ClientConnection.Kubeconfig = kubeconfig
	s.Generic.Controllers = enabledControllers
	s.Generic.LeaderElection.LeaderElect = false
	// No HTTPS endpoint: nothing scrapes it, and it would need delegated authn/authz set up.
	s.SecureServing.BindPort = 0
	s.SAController.RootCAFile = certs.CACert()
	// Token Secrets are not needed: Pods get tokens from the TokenRequest API.
	s.SAController.ServiceAccountKeyFile = ""

	c, err := s.Config(ctx, app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases())
	if err != nil {
		return err
	}
	return app.Run(ctx, c.Complete())
}
