"""Device diagnostic for the whole-run CUDA-graph test of tests/test_train_e2e.py: was the val-loss gap between
cudagraphs=true and false (37% at epoch 3, H200, deterministic cuDNN, no TF32; results/h200-2026-12-01g-gpu-tests.log)
a bug, or the spread any two runs of that tiny net on random synthetic labels show? Runs the test's configuration
several times each way; prints each run's per-epoch losses and its last checkpoint's largest parameter gap from
the first run's. Found (results/h200-2026-12-01h-diverge.log): with deterministic cuDNN each setting repeats bit
for bit; the two part by 6e-4 in the first val loss and end at 5.55 against 3.49; two runs without graphs that
differ only in cuDNN's algorithms and TF32 end at 5.55 and 4.41. So the later val losses are chaos, not the graphs.
Usage (on a GPU, from the repository root): python3 results/graphs-diverge.py OUTDIR
(run by results/h200-2026-12-01h.sh)."""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._pytree import tree_leaves

# Run as a script from the repository root: the root (for train) and tests/ (for synthetic) on the path.
root = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(root), str(root / "tests")]
from synthetic import write_cifar10_pickles  # noqa: E402

from train.config import parse  # noqa: E402
from train.loop import run  # noqa: E402

out_root = Path(sys.argv[1])
device = sys.argv[2] if len(sys.argv) > 2 else "cuda"  # "cpu" (compile=false) only to try the script
data = write_cifar10_pickles(Path(tempfile.mkdtemp()))
plan = [(True, "false"), (True, "true"), (True, "false"), (True, "true"), (False, "false"), (False, "true")]
start, first = time.time(), None
for i, (det, graphs) in enumerate(plan):
    if time.time() - start > 420:
        print("stopped: time")
        break
    torch.backends.cudnn.deterministic = det
    torch.backends.cudnn.allow_tf32 = not det
    torch.backends.cuda.matmul.allow_tf32 = not det
    out = out_root / f"{i}-det{int(det)}-graphs-{graphs}"
    cfg = parse(["model=resnet18", "net.width=4", f"device={device}", f"compile={str(device == 'cuda').lower()}",
                 f"cudagraphs={graphs if device == 'cuda' else 'false'}",
                 "precision=fp32", "cudnn_benchmark=false", "download=false", "progress=false", f"data={data}",
                 f"out={out}", "epochs=3", "batch_size=40", "val_fraction=0.2", "lr=0.05"])
    run(cfg, log=lambda line: None)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    params = tree_leaves(torch.load(out / "last.pt", weights_only=False)["params"])
    first = first or params
    gap = max(((p - q).abs().max() / q.abs().max().clamp_min(1e-12)).item() for p, q in zip(params, first))
    print(f"run {i} deterministic={det} cudagraphs={graphs}: " + "; ".join(
        f"train {r['train_loss']:.4f} val {r['val_loss']:.4f} top1 {r['val_top1']:.1f}" for r in rows)
        + f" | params max rel gap from run 0 {gap:.2e}", flush=True)
