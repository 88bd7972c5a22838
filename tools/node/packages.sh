#!/usr/bin/env bash
# Installs the Debian packages the test node and the image builds use, once per machine (root):
# containerd + runc (the node's runtime), the CNI plugins (pod network), iptables + conntrack
# (kube-proxy), buildah (builds the images without a Docker engine) and debootstrap (the images'
# Debian base). Does nothing when all are present.
set -euo pipefail
declare -A wanted=(
  [containerd]=containerd [runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins
  [iptables]=iptables [conntrack]=conntrack [buildah]=buildah [debootstrap]=debootstrap
)
missing=()
for probe in "${!wanted[@]}"; do
  if [[ $probe == /* ]]; then [[ -e $probe ]] || missing+=("${wanted[$probe]}")
  else command -v "$probe" >/dev/null || missing+=("${wanted[$probe]}"); fi
done
(( ${#missing[@]} )) || exit 0
if [[ $(id -u) != 0 ]]; then
  echo "packages.sh: the test node needs root and these Debian packages: ${missing[*]}" >&2
  exit 1
fi
echo "packages.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq "${missing[@]}" >&2
