//go:build tools

// Package tools pins the Kueue manager command (cmd/kueue), which the end-to-end tests run on the
// host beside KubeRay to queue, admit and preempt RayJobs (tests/plugins/kueue.py).
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
