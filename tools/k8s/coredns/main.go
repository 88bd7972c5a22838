// Command coredns is CoreDNS with only the plugins the test node's cluster DNS uses, so pods resolve
// Service names (KubeRay's workers and submitter reach the head through its Service) without building
// CoreDNS's cloud-provider plugins.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order plugins handle a query in; CoreDNS's own list (plugin.cfg) restricted to those above.
var directives = []string{"bind", "errors", "health", "ready", "cache", "kubernetes"}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
