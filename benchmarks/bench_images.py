"""The container images of the cluster tests (tools/images/build.sh): build times and sizes.

    python benchmarks/bench_images.py           # build (or find cached), then a run with nothing changed
    python benchmarks/bench_images.py --touch   # also: rebuild after a change of a trainer source file
    python benchmarks/bench_images.py --cold    # first empty the cache (rebuilds everything: minutes)

Prints, per image, the build and export seconds (the first run's, cold only when the cache was
empty), the archive's bytes and the unpacked bytes (regular files in its layers), then the second
run's time and the disk the cache takes (builder storage, archives, wheelhouse, Debian root
filesystem). Writes benchmarks/results/images.json. --touch appends a comment to a trainer source
file, builds, restores the file and builds again (the restored tree's archive was replaced, so that is
a rebuild too). Needs root, buildah and debootstrap; without them it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "tools" / "images" / "build.sh"
RESULTS = REPO / "benchmarks" / "results" / "images.json"
TOUCHED = REPO / "trainer" / "empo_trainer" / "__init__.py"
CACHE = Path(os.environ.get("EMPO_IMAGES_CACHE") or Path.home() / ".cache" / "empo-images")
BUILT = re.compile(r"built (\S+) in (\d+) s, exported in (\d+) s")


def run_build() -> dict:
    """Runs build.sh; its stdout lines, wall time and per-image build/export seconds."""
    started = time.perf_counter()
    proc = subprocess.run([str(BUILD)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"build.sh failed with exit {proc.returncode}")
    images = {}
    for line in proc.stdout.splitlines():
        name, ref, archive = line.split()
        images[name] = {"ref": ref, "archive": archive}
    built = {m.group(1): {"build_s": int(m.group(2)), "export_s": int(m.group(3))} for m in BUILT.finditer(proc.stderr)}
    return {"seconds": round(seconds, 2), "images": images, "built": built}


def unpacked_bytes(archive: str) -> int:
    """Bytes of the regular files in a docker-archive's layers (what the image takes unpacked, whiteouts
    and files a later layer replaces counted as in the layers)."""
    total = 0
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                total += sum(m.size for m in inner if m.isreg())
    return total


def du(path: Path) -> int:
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else 0


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--touch", action="store_true", help="also time a rebuild after changing a trainer source")
    parser.add_argument("--cold", action="store_true", help="empty the image cache first (a full rebuild)")
    args = parser.parse_args()

    missing = [tool for tool in ("buildah", "debootstrap", "gcc") if not shutil.which(tool)]
    if os.geteuid() != 0 or missing:
        print(f"bench_images: skipped (needs root and {', '.join(missing) or 'nothing else'})")
        return 0

    if args.cold and CACHE.exists():
        # The builder's storage may hold overlay mounts: let buildah release them before removing.
        run_root = CACHE / "run" / Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        subprocess.run(["buildah", "--root", str(CACHE / "storage"), "--runroot", str(run_root),
                        "--storage-driver", os.environ.get("EMPO_IMAGES_STORAGE_DRIVER", "overlay"),
                        "umount", "--all"], capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(CACHE)], check=True)
    cold = not (CACHE / "archives").exists()

    first = run_build()
    second = run_build()
    print(f"first run ({'cold' if cold else 'as cached'}): {first['seconds']:.1f} s; "
          f"second run, nothing changed: {second['seconds']:.2f} s", flush=True)
    if second["built"]:  # the working tree changed in between
        print(f"  (the second run rebuilt {', '.join(second['built'])}: the tree changed meanwhile)")
    sizes = {}
    for name, image in second["images"].items():
        archive_bytes = os.path.getsize(image["archive"])
        unpacked = unpacked_bytes(image["archive"])
        sizes[name] = {"archive_bytes": archive_bytes, "unpacked_bytes": unpacked}
        times = first["built"].get(name)
        took = f"built in {times['build_s']} s, exported in {times['export_s']} s" if times else "cached"
        print(f"  {name:12s} {image['ref']:42s} archive {gib(archive_bytes):>10s}  unpacked {gib(unpacked):>10s}  {took}",
              flush=True)

    touched = None
    if args.touch:
        original = TOUCHED.read_bytes()
        try:
            TOUCHED.write_bytes(original + b"\n# bench_images: a change of a trainer source\n")
            changed = run_build()
        finally:
            TOUCHED.write_bytes(original)
        restored = run_build()
        touched = {"changed": changed, "restored": restored}
        rebuilt = ", ".join(f"{n} {t['build_s']}+{t['export_s']} s" for n, t in changed["built"].items())
        print(f"after changing {TOUCHED.relative_to(REPO)}: {changed['seconds']:.1f} s (build+export: {rebuilt}); "
              f"restored: {restored['seconds']:.1f} s", flush=True)

    disk = {
        "storage": du(CACHE / "storage"),
        "archives": du(CACHE / "archives"),
        "wheelhouse": du(CACHE / "buildah-tmp" / "buildah-cache"),
        "rootfs": du(CACHE / "rootfs"),
    }
    print("cache disk: " + ", ".join(f"{k} {gib(v)}" for k, v in disk.items()) + f"  ({CACHE})")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "first_run": {"cold": cold, **first},
        "second_run_s": second["seconds"],
        "sizes": sizes,
        "touch": touched,
        "cache_disk_bytes": disk,
    }, indent=2) + "\n")
    print("results in", RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
