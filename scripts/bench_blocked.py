#!/usr/bin/env python3
"""The node's CPU with N executions waiting behind a full pool (scripts/bench.sh blocked).

Usage: bench_blocked.py URL NODE_PID IMAGE N [SECONDS]
Posts one `sleep 600` job to a task with maxConcurrent 1, then N-1 more: one runs, the gate
parks up to 256, the rest wait in the queue. After 15 s to settle, prints the node's CPU time
(user + system, /proc/PID/stat) over SECONDS (default 60): what the waiting costs, which should
not grow with N.
"""
import concurrent.futures
import json
import os
import sys
import time
import urllib.request

url, pid, image, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
seconds = int(sys.argv[5]) if len(sys.argv) > 5 else 60
body = json.dumps({"image": image, "command": "sleep 600", "maxConcurrent": 1}).encode()


def post(_):
    request = urllib.request.Request(f"{url}/tasks/bench-blocked/", data=body, method="POST")
    urllib.request.urlopen(request, timeout=60).read()


started = time.time()
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(post, range(count)))
print(f"posted {count} in {time.time() - started:.1f} s")
time.sleep(15)


def cpu():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


before = cpu()
time.sleep(seconds)
used = cpu() - before
print(f"{count} waiting behind a full pool: node CPU {used:.1f} s over {seconds} s "
      f"({100 * used / seconds:.1f} % of a core)")
