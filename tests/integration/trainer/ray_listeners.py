"""Start a local Ray as `empo train` does, and print every TCP socket its processes listen on as
JSON lines {"ip": ..., "port": ..., "process": ...}. Run as a separate process: Ray reads its
settings from the environment at import."""

import json
import os

from empo_trainer import driver

if __name__ == "__main__":
    driver._local_ray_env()
    driver._init_ray(1)
    import ray

    @ray.remote(num_cpus=0)
    class Probe:
        def pid(self):
            return os.getpid()

    ray.get(Probe.remote().pid.remote())  # a worker and an actor are up
    me = os.getpid()
    pids = {me}
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and f"EMPO_DRIVER_PID={me}\0".encode() in open(f"/proc/{entry}/environ", "rb").read():
                pids.add(int(entry))
        except OSError:
            pass
    sockets = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    sockets[link[8:-1]] = pid
        except OSError:
            pass
    for proto in ("tcp", "tcp6"):
        for line in open(f"/proc/net/{proto}").read().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in sockets:  # 0A: LISTEN
                continue
            addr, port = fields[1].split(":")
            if proto == "tcp":
                ip = ".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
            elif addr.startswith("0000000000000000FFFF0000"):  # an IPv4-mapped IPv6 address
                ip = ".".join(str(int(addr[24:][i:i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                ip = "::1" if addr == "00000000000000000000000001000000" else ("::" if set(addr) == {"0"} else addr)
            name = open(f"/proc/{sockets[fields[9]]}/cmdline", "rb").read().split(b"\0")[0].decode()[-60:]
            print(json.dumps({"ip": ip, "port": int(port, 16), "process": name}), flush=True)
    ray.shutdown()
