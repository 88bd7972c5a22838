"""Start a local Ray as `empo train` does, with one actor, print this driver's pid and the pids of
its Ray processes as JSON, then wait to be killed (tests/integration/trainer/test_lifeline.py)."""

import json
import os
import signal
import time

from empo_trainer import driver, lifeline

if __name__ == "__main__":
    # Ctrl-C as it reaches a driver in a terminal: a test run started in the background (`cmd &` in a
    # script, as CI may) passes SIGINT down ignored, and Python then keeps it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    driver._local_ray_env()
    driver._init_ray(1)
    import ray

    @ray.remote(num_cpus=0)
    class Probe:
        def pid(self):
            lifeline.watch()
            return os.getpid()

    probe = Probe.remote()
    actor = ray.get(probe.pid.remote())
    print(json.dumps({"driver": os.getpid(), "actor": actor, "heirs": lifeline.heirs(os.getpid())}), flush=True)
    time.sleep(600)
