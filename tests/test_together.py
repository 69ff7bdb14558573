"""results/together.sh: one `make train` per argument, all with the same gpu_lock= (and SLOTS as gpu_slots=),
logs by name, `after=` delays; run with PYTHON=echo so that each "run" prints the command it would have run."""

import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_together_starts_each_run_with_the_shared_lock(tmp_path):
    root = tmp_path / "runs"
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", "results/together.sh", str(root), "PYTHON=echo MODEL=vgg16 ARGS='recipe=fast epochs=3'",
         "after=1 PYTHON=echo MODEL=vgg16 ARGS='seed=2'", "PYTHON=echo MODEL=alexnet"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "SLOTS": "2"})
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 >= 1  # the delayed run waited
    logs = {p.name: p.read_text() for p in root.glob("*.log")}
    assert set(logs) == {"vgg16-1.log", "vgg16-2.log", "alexnet-3.log"}
    lock = f"gpu_lock={root}/gpu.lock gpu_slots=2 progress=false"
    assert f"-m train model=vgg16 dataset=cifar10 data=.data out={root}/vgg16-1 recipe=fast epochs=3 {lock}" \
        in logs["vgg16-1.log"]
    assert f"out={root}/vgg16-2 seed=2 {lock}" in logs["vgg16-2.log"]
    assert f"-m train model=alexnet dataset=cifar10 data=.data out={root}/alexnet-3 {lock}" in logs["alexnet-3.log"]
    assert all(log.rstrip().endswith("exit 0") for log in logs.values())
