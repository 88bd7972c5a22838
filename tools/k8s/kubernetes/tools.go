//go:build tools

// Package tools pins the Kubernetes commands the tests run, so `go mod tidy` keeps their dependencies:
// the control plane, and the node (kubelet, kube-scheduler, kube-proxy) that runs its pods.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
