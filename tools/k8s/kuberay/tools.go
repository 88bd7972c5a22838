//go:build tools

// Package tools pins the KubeRay operator command (the module's root package is its main).
package tools

import _ "github.com/ray-project/kuberay/ray-operator"
