#!/usr/bin/env bash
# Writes tools/k8s/kubernetes/go.mod for k8s.io/kubernetes VERSION (e.g. v1.37.2).
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, k8s.io/client-go, ...) with paths inside
# its own repository, which a module that depends on it cannot see; so each replace is re-pointed at the
# published staging module of the same release (v1.37.2 -> v0.37.2), generated from that go.mod.
set -euo pipefail
version=${1:?usage: pin-kubernetes.sh vX.Y.Z}
staging=v0.${version#v1.}
dir=$(cd "$(dirname "$0")/kubernetes" && pwd)
cd "$dir"
cat > go.mod <<MOD
module empo.dev/tools/kubernetes

go 1.26

require k8s.io/kubernetes $version
MOD
go mod download -json "k8s.io/kubernetes@$version" >/dev/null
upstream=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$version.mod
{
  echo
  echo "replace ("
  sed -n '/^replace (/,/^)/p' "$upstream" | awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print "\t" $1 " => " $1 " '"$staging"'"}'
  echo ")"
} >> go.mod
go mod tidy
