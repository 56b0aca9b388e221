"""Kernel timing figures (not a test): start-up to first finished cell, and warm cell latency,
for the tunelab kernel and for plain evcxr (the same binary with TUNELAB_KERNEL_PRELOAD=0).
Run: python tests/kernel/bench_latency.py  (for a cold start, remove ~/.cache/evcxr and the kernel's
work directories, /tmp/tunelab-kernel-<uid>, then run `tunelab-kernel install`, which compiles the
library again)."""
import json
import os
import statistics
import time

import jupyter_client


def measure(preload: bool, cells: int = 20):
    env = dict(os.environ, TUNELAB_KERNEL_PRELOAD="1" if preload else "0")
    t0 = time.time()
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="tunelab", startup_timeout=120, env=env)
    first = "use tunelab::prelude::*; 1" if preload else "1"
    assert kc.execute_interactive(first, timeout=3600, output_hook=lambda m: None)["content"]["status"] == "ok"
    start_s = time.time() - t0
    lat = []
    for i in range(cells):
        t = time.time()
        assert kc.execute_interactive(f"let v{i} = {i} + 1; v{i}", timeout=120, output_hook=lambda m: None)["content"]["status"] == "ok"
        lat.append(time.time() - t)
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    return {"kernel": "tunelab" if preload else "plain evcxr", "start_to_first_cell_s": round(start_s, 1),
            "warm_cell_median_s": round(statistics.median(lat), 3), "warm_cell_max_s": round(max(lat), 3)}


if __name__ == "__main__":
    for preload in (True, False):
        print(json.dumps(measure(preload)))
