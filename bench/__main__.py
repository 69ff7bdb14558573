"""`python -m bench [section ...] [nets=a,b] [quick=true] [parallel=true] [out=DIR]`: run benchmark sections;
each writes its latest result on a GPU to bench/results/<section>-<device>.json and .md, headed by the device,
versions, date and command (a CPU run only prints, unless out= names a folder).

Sections: step (every family's training step, bench/step.py), loader (bench/loader.py), depthwise
(bench/depthwise/), attention (bench/attention.py), members (K members in one step against K = 1,
bench/members.py; ks=1,2,4,8, ceiling=true for the single net at K times the batch beside each K,
members_form=fold,unroll,vmap for the members step's forms, each against the same K = 1 (auto: the
trainer's), e2e=true epochs=3 for whole runs against K single runs (e2e=only: those runs without the
step's timing), epochs=recipe for the recipe's own; runs=members or runs=0,1 for some of those runs,
cache=<folder> for the compile cache that such parts share).
Without a GPU, the GPU sections are skipped with the reason and the loader is measured on the CPU.
parallel=true (step, members): one process per net, compiling a few at a time, then each timed alone on the
GPU (bench/parallel.py): minutes instead of a quarter hour; deadline=<s> stops the jobs not done by then
(those still compiling when only the timings' reserve is left, tried again if the waves leave time) and
names them.
variants=1,3g,4g
(step): only those variants (bench/step.py's labels; (1), the reference, always). tune=tiles|rows|wgrad|backward
(depthwise alone): the sweep behind one of the depthwise kernels' launch rules, in its own results file
(bench/depthwise/__init__.py).
"""

import sys

from bench.report import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
