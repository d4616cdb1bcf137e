"""Peak memory of a ``dualcodec eval`` sweep, point by point.

    python experiments/eval_memory.py [--drop-compiled] -- EVAL_ARGUMENTS...

Runs ``dualcodec eval EVAL_ARGUMENTS`` in this process and prints, after each point, the
process's peak resident size so far, its resident size now, and how many compiled
OpenVINO graphs and runtime objects it holds.
``--drop-compiled`` drops every compiled graph before each point, which shows what the
ones kept from earlier points cost. The README's *Limits worth knowing* quotes:

    python experiments/eval_memory.py -- ../shared/data/video/facade_1920x1080_73f.mp4 \\
        ../shared/data/video/dogbed_1280x720_149f.mp4 ../shared/data/video/vtest_768x576_250f.avi \\
        --qp 37 --frames 8 -o /tmp/eval_memory.json -y -q
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import warnings
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drop-compiled", action="store_true",
                        help="drop every compiled graph before each point")
    parser.add_argument("eval_args", nargs=argparse.REMAINDER, help="-- then the arguments of dualcodec eval")
    args = parser.parse_args()
    eval_args = args.eval_args[1:] if args.eval_args[:1] == ["--"] else args.eval_args
    if not eval_args:
        parser.error("give the arguments of dualcodec eval after --")

    from dualcodec import cli, evaluate, runtime

    measure = evaluate.measure

    def measured(codec, source: Path, qp: int, *rest, **kwargs):
        if args.drop_compiled:
            runtime._SHARED.compiled.clear()
            gc.collect()
        point = measure(codec, source, qp, *rest, **kwargs)
        gc.collect()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        now = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**30
        graphs = sum(len(sizes) for sizes in runtime._SHARED.compiled.values())
        with warnings.catch_warnings():  # isinstance wakes torch's deprecated lazy attributes
            warnings.simplefilter("ignore")
            runtimes = sum(isinstance(o, runtime.OpenVINORuntime) for o in gc.get_objects())
        print(f"{Path(source).name} QP {qp}: peak {peak:.2f} GiB, now {now:.2f} GiB, {graphs} compiled graphs, "
              f"{runtimes} runtimes", flush=True)
        return point

    evaluate.measure = measured  # sweep() looks it up at each point
    return cli.main(["eval", *eval_args])


if __name__ == "__main__":
    sys.exit(main())
