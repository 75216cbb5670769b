"""`python -m automl.bench.systems._child TASK_JSON [RUNNER_PID]`: one system on one cell
(see _exec); it kills itself when the runner process goes away."""

from __future__ import annotations

import logging
import os
import sys

from automl.bench.systems._exec import child_main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("transformers", "sentence_transformers", "ray", "optuna", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    child_main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown of torch, Ray and friends: the result is written.
    os._exit(0)
