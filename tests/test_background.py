"""results/background.sh: a job started in its own session outlives the shell that started it; `wait` returns
at its end (or at the time limit), prints each log's last line, and packs the folder without checkpoints."""

import subprocess
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "results" / "background.sh")


def test_a_background_job_is_waited_for_and_packed_without_checkpoints(tmp_path):
    job, dest = tmp_path / "job", tmp_path / "dest"
    body = f"mkdir -p {job}/runs; echo epoch 1 > {job}/runs/a.log; sleep 2; echo epoch 2 >> {job}/runs/a.log; " \
           f"touch {job}/runs/last.pt; exit 3"
    subprocess.run(["bash", SCRIPT, "start", str(job), "bash", "-c", body], check=True, timeout=10)
    assert not (job / "job.exit").exists()  # start returned at once, the job goes on
    early = subprocess.run(["bash", SCRIPT, "wait", str(job), "0", str(dest)], capture_output=True, text=True,
                           check=True, timeout=10)
    assert "job still running" in early.stdout
    t0 = time.monotonic()
    done = subprocess.run(["bash", SCRIPT, "wait", str(job), "30", str(dest)], capture_output=True, text=True,
                          check=True, timeout=40)
    assert time.monotonic() - t0 < 20  # returned at the job's end, not at the limit
    assert "runs/a.log: epoch 2" in done.stdout and "job ended, exit 3" in done.stdout
    with tarfile.open(dest / "job.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"job/runs/a.log", "job/job.exit", "job/job.log"} <= names and "job/runs/last.pt" not in names


def test_a_wrong_verb_is_a_usage_error():
    proc = subprocess.run(["bash", SCRIPT, "stop"], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2 and "usage:" in proc.stderr
