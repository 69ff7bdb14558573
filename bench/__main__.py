"""`python -m bench [section ...] [nets=a,b] [quick=true] [parallel=true]`: run benchmark sections, merge
them into bench/results/<device>.json and .md (each section keeps the header of the run that measured it).

Sections: step (every family's training step, bench/step.py), loader (bench/loader.py), depthwise
(bench/depthwise.py), attention (bench/attention.py). Without a GPU, the GPU sections are skipped with the
reason and the loader is measured on the CPU. parallel=true (step): one process per net, compiling a few at a
time, then each is timed alone in turn (bench/step.py, measure_in_parallel): minutes instead of a quarter hour.
gpu_lock=FILE (step): the timing waits until FILE's lock (flock) is free: trainings started with the same
gpu_lock=, or a script, keep the GPU to themselves while the benchmark compiles beside them. variants=1,3g,4g
(step): only those variants (bench/step.py's labels; (1), the reference, always).
"""

import sys

from bench.report import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
