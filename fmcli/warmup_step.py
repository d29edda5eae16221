"""The second process of a first run (fmcli.learners.warmup): one step of the run's learner on
a few made-up rows, which compiles its kernels into numba's cache, then exit.

usage: python -m fmcli.warmup_step SPEC_JSON PARENT_PID
"""

import json
import os
import sys
import threading
import time


def main():
    spec, parent = json.loads(sys.argv[1]), int(sys.argv[2])

    def watch():        # end with the parent (a finished, failed or killed run)
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    from fmcli.learners.base import TrainOptions
    from fmcli.learners.warmup import tiny_data
    from fmcli.train import build_learner

    opts = TrainOptions(task=spec["task"], method=spec["method"], dim=tuple(spec["dim"]), iterations=1,
                        regular=(0.0, 1.0, 1.0), save_samples=False)
    learner = build_learner(opts, tiny_data(opts.task), {"test": tiny_data(opts.task, seed=1)})
    learner.step(0)
    os._exit(0)


if __name__ == "__main__":
    main()
