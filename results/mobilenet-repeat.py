"""Device diagnostic for the whole-run CUDA-graph test's MobileNetV1 case (tests/test_train_e2e.py): it failed in 3
of 3 runs side by side on 2026-12-01 even in Inductor's deterministic mode, and one run *without* graphs gave,
bit for bit, the losses of another process's run *with* graphs (results/h200-2026-12-01o.log). So the graphs are
not what differs: does one setting repeat at all, within a process and across processes, and which part does not
(the compiled graph, the Triton depthwise kernels, eager PyTorch)? Runs the test's configuration, one epoch,
cudagraphs=false, twice per setting; prints each run's losses and its checkpoint's largest parameter gap from the
setting's first run; the eager runs with torch.use_deterministic_algorithms(True, warn_only=True) also print the
ops PyTorch names as nondeterministic.
Usage (on a GPU, from the repository root; start two at once to compare processes):
python3 results/mobilenet-repeat.py OUTDIR [SECONDS]"""

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch._inductor.config
from torch.utils._pytree import tree_leaves

# Run as a script from the repository root: the root (for train) and tests/ (for synthetic) on the path.
root = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(root), str(root / "tests")]
from synthetic import write_cifar10_pickles  # noqa: E402

from train.config import parse  # noqa: E402
from train.loop import run  # noqa: E402

out_root = Path(sys.argv[1])
budget = float(sys.argv[2]) if len(sys.argv) > 2 else 420.0
torch.backends.cudnn.deterministic = True
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
torch._inductor.config.deterministic = True
data = write_cifar10_pickles(Path(tempfile.mkdtemp()))
# (compile, kernels): eager first, since it is quickest and says whether PyTorch alone repeats.
plan = [(c, k) for c, k in [("false", "reference"), ("false", "auto"), ("true", "auto"), ("true", "reference")]
        for _ in range(2)]
start, first = time.time(), {}
for i, (compiled, kernels) in enumerate(plan):
    if time.time() - start > budget:
        print("stopped: time", flush=True)
        break
    out = out_root / f"{i}-compile-{compiled}-{kernels}"
    cfg = parse(["model=mobilenetv1", "net.alpha=0.25", f"net.kernels={kernels}", "device=cuda",
                 f"compile={compiled}", "cudagraphs=false", "precision=fp32", "cudnn_benchmark=false",
                 "download=false", "progress=false", f"data={data}", f"out={out}", "epochs=1", "batch_size=40",
                 "val_fraction=0.2", "lr=0.05"])
    torch.use_deterministic_algorithms(compiled == "false", warn_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(cfg, log=lambda line: None)
    torch.use_deterministic_algorithms(False)
    flagged = sorted({str(w.message).split("\n")[0][:160] for w in caught if "determinis" in str(w.message)})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    params = tree_leaves(torch.load(out / "last.pt", weights_only=False)["params"])
    ref = first.setdefault((compiled, kernels), params)
    gap = max(((p - q).abs().max() / q.abs().max().clamp_min(1e-12)).item() for p, q in zip(params, ref))
    print(f"run {i} compile={compiled} kernels={kernels}: train {rows[0]['train_loss']!r} val {rows[0]['val_loss']!r}"
          f" | params max rel gap from the setting's first run {gap:.2e} | {time.time() - start:.0f} s", flush=True)
    for message in flagged:
        print(f"    nondeterministic: {message}", flush=True)
