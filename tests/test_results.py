"""README's accuracy table against the run directories it links (results/<row>/): every number in a row is
the one its run wrote, and the row's recipe alone reproduces each run's configuration."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from train.config import from_json, parse

REPO = Path(__file__).resolve().parents[1]
LINKED = re.compile(r"\[(\d+)\]\((results/[^)]+)\)")
# Keys that say where and how a run was started, not what it trained.
MACHINERY = {"data", "download", "out", "progress", "resume", "device", "compile", "eval_batch_size",
             "cudnn_benchmark", "cudagraphs"}


def table_rows() -> list[list[str]]:
    """The accuracy table's rows that link a run directory, as lists of cells."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Accuracy"):]
    table = table[:table.index("\n#")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| ") and LINKED.search(line)]


ROWS = table_rows()


def number(cell: str) -> float:
    return float(re.match(r"[\d,.]+", cell.strip("*")).group().replace(",", ""))


def test_the_table_links_every_family_it_reports():
    assert len(ROWS) >= 6, ROWS


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_row_equals_its_run(row):
    model_name, params, recipe, epochs, gpu, seconds, compile_s, val, top1, top5, _target = row
    count, run = LINKED.fullmatch(epochs).groups()
    run = REPO / run
    results = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text())
    first_compile = re.search(r"^compiled in ([\d.]+) s\b", (run / "train.log").read_text(), re.M).group(1)
    assert re.fullmatch(r"H[12]00 \([a-z]\)", gpu), gpu  # the GPU, and the footnote that says how it ran
    assert results["device"].split()[:2] == ["NVIDIA", gpu.split()[0]] and results["dataset"] == "cifar10"
    assert number(params) == results["params"]
    assert recipe.split()[0] == results["recipe"] == config["recipe"]
    assert int(count) == results["epochs_run"] == config["epochs"]
    assert number(seconds) == round(results["train_seconds"], 1)
    assert abs(number(compile_s) - float(first_compile)) <= 0.55  # whole seconds, from the log's 0.1 s
    assert (number(val), number(top1), number(top5)) == (results["best_val_top1"], results["test_top1"],
                                                         results["test_top5"])


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_recipe_alone_reproduces_the_run(row):
    run = REPO / LINKED.fullmatch(row[3]).group(2)
    saved = from_json((run / "config.json").read_text(), str(run))
    again = parse([f"recipe={saved.recipe}", f"model={saved.model}", f"dataset={saved.dataset}"])
    differ = {k: (v, getattr(again, k)) for k, v in dataclasses.asdict(saved).items()
              if k not in MACHINERY and v != getattr(again, k)}
    assert not differ
