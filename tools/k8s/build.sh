#!/usr/bin/env bash
# Builds the real control plane and node the cluster tests run (tests/plugins/control_plane.py) from pinned Go
# modules, once per version, into a cache outside the checkout so every clone on a machine shares it:
#   ${EMPO_TOOLS_CACHE:-$HOME/.cache/empo-tools}/<component>-<version>/bin
# Each component is a small wrapper module here (go.mod + go.sum pin every dependency). A component is
# rebuilt only when its wrapper's go.mod/go.sum change; otherwise this takes milliseconds.
# Prints one line per component on stdout: "<component> <bin dir>"; build logs go to stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${EMPO_TOOLS_CACHE:-$HOME/.cache/empo-tools}
# -trimpath makes the build cache independent of where the checkout and module cache live.
export GOFLAGS="-trimpath -buildvcs=false"

built_any=0

# version MODULE DIR: the pinned version of MODULE in DIR/go.mod.
version() {
  awk -v m="$1" '$1 == m && $2 ~ /^v/ {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$2/go.mod"
}

# build NAME MODULE LDFLAGS PACKAGE...: builds the packages of wrapper module tools/k8s/NAME into
# the cache; "{version}" in LDFLAGS is replaced by the module's pinned version.
build() {
  local name=$1 module=$2 ldflags=$3
  shift 3
  local dir=$here/$name
  local ver
  ver=$(version "$module" "$dir")
  [[ -n $ver ]] || { echo "build.sh: no version of $module in $dir/go.mod" >&2; exit 1; }
  local out=$cache/$name-$ver
  ldflags="-s -w ${ldflags//\{version\}/$ver}"
  local stamp
  stamp=$({ cat "$dir/go.mod" "$dir/go.sum" "$dir"/*.go; echo "$ldflags"; } | sha256sum | cut -d' ' -f1)
  if [[ -f $out/stamp && $(cat "$out/stamp") == "$stamp" ]]; then
    echo "$name $out/bin"
    return
  fi
  # One build per component at a time (a test session and `make` may both ask): the second waits
  # for the first and then finds its result.
  mkdir -p "$cache"
  exec {lock}>"$cache/$name.lock"
  flock "$lock"
  if [[ -f $out/stamp && $(cat "$out/stamp") == "$stamp" ]]; then
    flock -u "$lock"
    echo "$name $out/bin"
    return
  fi
  echo "build.sh: building $name $ver into $out (the first time takes minutes)" >&2
  local start=$SECONDS
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp/bin"
  (cd "$dir" && nice -n 10 go build -ldflags="$ldflags" -o "$out.tmp/bin/" "$@") >&2
  if [[ $name == kuberay ]]; then
    # The RayJob/RayCluster CRDs of the same release, so the tests install what the operator expects.
    local src
    src=$(cd "$dir" && go list -m -f '{{.Dir}}' "$module")
    mkdir -p "$out.tmp/crds"
    cp "$src"/config/crd/bases/*.yaml "$out.tmp/crds/"
    chmod u+w "$out.tmp/crds"/*.yaml
  fi
  if [[ $name == kueue ]]; then
    # Kueue's CRDs and webhook manifests of the same release (tests/plugins/kueue.py installs them).
    local src
    src=$(cd "$dir" && go list -m -f '{{.Dir}}' "$module")
    mkdir -p "$out.tmp/crds" "$out.tmp/webhook"
    cp "$src"/config/components/crd/bases/*.yaml "$out.tmp/crds/"
    cp "$src"/config/components/webhook/manifests.yaml "$out.tmp/webhook/"
    chmod u+w "$out.tmp/crds"/*.yaml "$out.tmp/webhook"/*.yaml
  fi
  echo "$stamp" > "$out.tmp/stamp"
  built_any=1
  rm -rf "$out"
  mv "$out.tmp" "$out"
  flock -u "$lock"
  echo "build.sh: built $name $ver in $((SECONDS - start)) s" >&2
  echo "$name $out/bin"
}

build etcd go.etcd.io/etcd/server/v3 "" .
# What the release scripts stamp (hack/lib/version.sh): without it the server reports v0.0.0, which
# Helm's kubeVersion checks and kubectl's version-skew warning would see.
k8s_version=(k8s.io/client-go/pkg/version k8s.io/component-base/version)
k8s_minor=$(version k8s.io/kubernetes "$here/kubernetes" | cut -d. -f2)
k8s_ldflags=""
for pkg in "${k8s_version[@]}"; do
  k8s_ldflags+=" -X $pkg.gitVersion={version} -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
build kubernetes k8s.io/kubernetes "$k8s_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy
build kuberay github.com/ray-project/kuberay/ray-operator "" github.com/ray-project/kuberay/ray-operator
# The node's cluster DNS (tests/plugins/node.py): CoreDNS with the kubernetes plugin only.
build coredns github.com/coredns/coredns "" .
build helm helm.sh/helm/v3 "-X helm.sh/helm/v3/internal/version.version={version}" helm.sh/helm/v3/cmd/helm
# Queueing, admission and preemption of RayJobs (tests/plugins/kueue.py); the version stamp is the
# one Kueue's Makefile sets (it logs it at start).
build kueue sigs.k8s.io/kueue "-X sigs.k8s.io/kueue/pkg/version.GitVersion={version}" sigs.k8s.io/kueue/cmd/kueue
# The binaries are the cache; Go's build cache (gigabytes after Kubernetes) would only speed up a
# rebuild after a version change, and a machine short of disk fails SeaweedFS and the node instead.
if (( built_any )); then
  go clean -cache
fi
