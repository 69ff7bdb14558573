"""README's accuracy tables against the run directories they link (results/<row>/): every number in a row is
the one its run wrote, and the row's recipe alone reproduces each run's configuration; the members section's
end-to-end figures against the bench run that wrote them (bench/results/)."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from train.config import from_json, parse

REPO = Path(__file__).resolve().parents[1]
LINKED = re.compile(r"\[(\d+)\]\((results/[^)]+)\)")
# Keys that say where and how a run was started, not what it trained (members_form: the same members computed
# another way, as train.config.RESUMABLE says).
MACHINERY = {"data", "download", "out", "progress", "resume", "device", "compile", "eval_batch_size",
             "cudnn_benchmark", "cudagraphs", "inductor_autotune", "members_form"}


def section_text(heading: str) -> str:
    """The README's text from `heading` to the next heading."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index(heading + "\n"):]
    return section[:section.index("\n#")]


def table_rows(section: str = "## Accuracy", linked=LINKED) -> list[list[str]]:
    """The rows of the README table under `section` that link a run directory, as lists of cells."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in section_text(section).splitlines()
            if line.startswith("| ") and linked.search(line)]


ROWS = table_rows()
SPEED_LINK = re.compile(r"\[seed (\d+)\]\((results/[^)]+)\)")
SPEED_ROWS = table_rows("## Speed run", SPEED_LINK)


def recipe_differences(saved, *words: str) -> dict:
    """The keys, other than MACHINERY, in which a saved run differs from its recipe, model and dataset alone
    (plus `words`), as {key: (saved, recipe's)}."""
    again = parse([f"recipe={saved.recipe}", f"model={saved.model}", f"dataset={saved.dataset}", *words])
    return {k: (v, getattr(again, k)) for k, v in dataclasses.asdict(saved).items()
            if k not in MACHINERY and v != getattr(again, k)}


def model_of(name: str) -> str:
    """The registry's name of a net as the README writes it (ResNet-18: resnet18)."""
    return name.replace("-", "").lower()


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
    assert not recipe_differences(from_json((run / "config.json").read_text(), str(run)))


def test_the_speed_run_table_equals_its_three_runs_which_differ_only_in_seed():
    """README's speed-run rows against their runs (seed, seconds, val and test top-1/top-5, compile from the
    log, on the GPU the section names), the mean row against the rows, and the runs' configurations: the
    section's command line with the row's seed, nothing else."""
    assert [int(r[0]) for r in SPEED_ROWS] == [0, 1, 2]
    section = section_text("## Speed run")
    command = re.search(r'^make train .*MODEL=(\w+) .*ARGS="([^"]*)"$', section, re.M)
    keys = [f"model={command.group(1)}", *(k for k in command.group(2).split() if not k.startswith("seed="))]
    gpu = re.search(r"on one (NVIDIA [\w ]+?) \(", section).group(1)
    columns = []
    for seed, link, seconds, compile_s, val, top1, top5 in SPEED_ROWS:
        linked_seed, run = SPEED_LINK.fullmatch(link).groups()
        run = REPO / run
        results = json.loads((run / "results.json").read_text())
        first_compile = re.search(r"^compiled in ([\d.]+) s\b", (run / "train.log").read_text(), re.M).group(1)
        assert linked_seed == seed and results["recipe"] == "speedrun" and results["model"] == "resnet18"
        assert results["device"] == gpu and results["dataset"] == "cifar10"
        assert number(seconds) == round(results["train_seconds"], 1) and results["train_seconds"] <= 24
        assert number(compile_s) == float(first_compile)
        assert (number(val), number(top1), number(top5)) == (results["best_val_top1"], results["test_top1"],
                                                             results["test_top5"])
        saved = from_json((run / "config.json").read_text(), str(run))
        again = parse([*keys, f"seed={seed}"])
        assert {k for k, v in dataclasses.asdict(saved).items() if v != getattr(again, k)} <= MACHINERY
        columns.append([results["train_seconds"], results["best_val_top1"], results["test_top1"],
                        results["test_top5"]])
    mean_row = re.search(r"^\| mean \| \| ([\d.]+) s \| \| ([\d.]+) \| \*\*([\d.]+)\*\* \| ([\d.]+) \|$", section, re.M)
    means = [round(sum(c) / 3, {0: 1}.get(i, 2)) for i, c in enumerate(zip(*columns))]
    assert [float(g) for g in mean_row.groups()] == means


MEMBERS = "## Seed sweeps and ensembles in one run"
MEMBER_ROWS = table_rows(MEMBERS)


def test_the_members_table_equals_its_runs_at_the_default_recipe():
    """README's members rows against their runs: each member's test top-1 in seed order, their mean +- std, the
    ensemble's top-1, its gain over the mean, the training seconds, the epochs and the date the log's first line
    gives, on the GPU and versions the section names; each run is its row's default recipe with members=4 and
    nothing else."""
    assert len(MEMBER_ROWS) >= 2, MEMBER_ROWS
    section = section_text(MEMBERS)
    gpu, torch_version = re.search(r"alone on an (H100 80GB HBM3), torch ([\w.+]+),", section).groups()
    for name, epochs, date, members, mean_std, ensemble, gain, seconds in MEMBER_ROWS:
        count, run = LINKED.fullmatch(epochs).groups()
        run = REPO / run
        results = json.loads((run / "results.json").read_text())
        saved = from_json((run / "config.json").read_text(), str(run))
        started = re.search(r"started (\d{4}-\d\d-\d\d)T", (run / "train.log").read_text().splitlines()[0])
        assert (results["device"], results["torch"], started.group(1)) == (f"NVIDIA {gpu}", torch_version, date)
        assert model_of(name) == results["model"] == saved.model and results["dataset"] == "cifar10"
        assert int(count) == results["epochs_run"] == saved.epochs and saved.members == 4
        tops = [m["test_top1"] for m in results["members"]]
        assert [number(c) for c in members.split(" / ")] == tops
        assert [m["seed"] for m in results["members"]] == saved.member_seeds() == [0, 1, 2, 3]
        mean, std = results["member_mean"]["test_top1"], results["member_std"]["test_top1"]
        assert mean == pytest.approx(sum(tops) / 4) and mean_std == f"{mean:.2f} +- {std:.2f}"
        assert number(ensemble) == results["test_top1"] and gain == f"+{results['test_top1'] - mean:.2f}"
        assert number(seconds) == round(results["train_seconds"], 1)
        differ = recipe_differences(saved, "members=4")
        assert not differ, differ


def test_the_members_end_to_end_sentence_equals_its_bench_run():
    """README's end-to-end figures (each net's members run's wall seconds, its K single runs' sum, their ratio,
    the date and the command) are those of the bench run in bench/results/members-h100.json that the sentence
    names, one run per net."""
    section = " ".join(section_text(MEMBERS).split())
    figures, date, command = re.search(
        r"took, against four single runs in turn, (.+?) in wall time "
        r"\(one H100, (\d{4}-\d\d-\d\d), `python -m (bench members nets=<net> [^`]+)`\)", section).groups()
    found = re.findall(r"([\w-]+) ([\d,]+) s against ([\d,]+) s \(([\d.]+)\)", figures)
    assert [net for net, *_ in found] == ["MobileNetV1", "ResNet-18"], figures
    runs = json.loads((REPO / "bench/results/members-h100.json").read_text())["runs"]
    for net, members, apart, ratio in found:
        prefix = f"python3 -m {command.replace('<net>', model_of(net))} "
        [run] = [r for r in runs if r["header"]["command"].startswith(prefix)]
        [row] = run["end_to_end"]
        assert (run["header"]["device"], run["header"]["date"]) == ("NVIDIA H100 80GB HBM3", date)
        assert (row["net"], row["K"], row["epochs"]) == (model_of(net), 4, "recipe")
        assert number(members) == round(row["members=K s"]) and number(apart) == round(row["K single runs s"])
        assert ratio == f"{row['ratio']:.2f}" == f"{row['members=K s'] / row['K single runs s']:.2f}"
