"""Fresh processes whose threads each make a new OpenVINO runtime's first run at once.

    python experiments/race_first_runs.py [--threads 8] [--runs 20] [--model default_x4]

Each run starts a process in which ``--threads`` threads, released together by a
barrier, compute the all-zero side features of a new :class:`OpenVINORuntime` each (a
new infer request's first run), as the pipelined encoder's workers do at their first
frame; a process that has not finished in 40 s is counted as hung. Before
dualcodec.runtime ran a request's first run under its lock, two such first runs could
deadlock in the bindings' lazy statics (pybind11's numpy API): 3 of 20 processes hung
at 8 threads here, and a `dualcodec encode` with default_x4 once hung for good.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import sys, threading
    from dualcodec.model import load_model
    from dualcodec.runtime import OpenVINORuntime
    threads = int(sys.argv[1])
    loaded = load_model(sys.argv[2])
    runtimes = [OpenVINORuntime(loaded, threads=1, streams=2) for _ in range(threads)]
    barrier = threading.Barrier(threads)
    def first_run(runtime):
        barrier.wait()
        runtime.side_features(None, 60, 80)
    workers = [threading.Thread(target=first_run, args=(r,)) for r in runtimes]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--model", default="default_x4", help="a model with a side stream")
    args = parser.parse_args()
    hung = 0
    for _ in range(args.runs):
        try:
            subprocess.run([sys.executable, "-c", CHILD, str(args.threads), args.model], check=True,
                           capture_output=True, timeout=40)
        except subprocess.TimeoutExpired:
            hung += 1
    print(f"{hung} of {args.runs} processes hung ({args.threads} threads each)")
    return 1 if hung else 0


if __name__ == "__main__":
    sys.exit(main())
