"""bench/step.py's and bench/members.py's bookkeeping for parallel=true: the jobs, the merged rows, the compile
slots and the process protocol of bench/parallel.py (the timing itself needs a GPU and runs there)."""

import fcntl
import re

import pytest
import torch
from fake_timer import fake_timer
from test_depthwise import DEVICE, needs_triton

import bench.parallel as parallel
import bench.step as step


def test_nets_with_kernels_get_a_second_job_with_its_own_baseline():
    jobs = step.parallel_jobs(["resnet18", "vit"])
    assert jobs == [
        ("resnet18", [step.BASELINE, "(2) functional", "(3) compiled", step.GRAPHS]),
        ("vit", [step.BASELINE, "(2) functional", "(3) compiled", step.GRAPHS]),
        ("vit", [step.BASELINE, step.KERNELS, step.KERNELS_GRAPHS]),
    ]


def test_variants_picks_by_label_and_keeps_the_baseline():
    jobs = step.parallel_jobs(["resnet18", "vit"], only=("3g", "4g"))
    assert jobs == [("resnet18", [step.BASELINE, step.GRAPHS]), ("vit", [step.BASELINE, step.GRAPHS]),
                    ("vit", [step.BASELINE, step.KERNELS_GRAPHS])]
    assert step.parallel_jobs(["alexnet"], only=("4",)) == [("alexnet", [step.BASELINE])]  # no kernels there


def test_unknown_variant_is_a_one_line_error_naming_the_labels():
    from bench.report import variant_labels

    assert variant_labels("1,(3g), 4g") == ("1", "3g", "4g") and variant_labels("") == ()
    with pytest.raises(SystemExit, match=r"unknown step variant 3s; variants: 1,2,3,3g,4,4g"):
        variant_labels("3,3s")


def test_merged_rows_keep_one_baseline_per_net():
    row = lambda net, variant, ips: {"net": net, "variant": variant, "train images/s": ips}  # noqa: E731
    first = [row("vit", step.BASELINE, 100.0), row("vit", "(3) compiled", 170.0)]
    second = [row("vit", step.BASELINE, 104.0), row("vit", step.KERNELS, 250.0)]
    merged = step.merge_rows(step.merge_rows([], first), second)
    assert merged == first + [second[1]]
    other = step.merge_rows(merged, [row("alexnet", step.BASELINE, 9.0)])
    assert other[-1]["net"] == "alexnet"  # another net's baseline is kept


def test_merged_rows_keep_one_baseline_per_net_and_cudnn_setting():
    row = lambda variant, bench, ips: {"net": "vit", "variant": variant, "cudnn.benchmark": bench,  # noqa: E731
                                       "train images/s": ips}
    first = [row(step.BASELINE, "off", 100.0), row(step.BASELINE, "on", 120.0), row("(3) compiled", "on", 170.0)]
    second = [row(step.BASELINE, "off", 104.0), row(step.BASELINE, "on", 118.0), row(step.KERNELS, "on", 250.0)]
    assert step.merge_rows(first, second) == first + [second[2]]
    assert step.merge_rows([first[0]], [second[1]]) == [first[0], second[1]]  # "on" has no baseline yet


def test_cudnn_settings_are_both_on_cuda_and_the_one_that_exists_elsewhere():
    import torch

    assert step.cudnn_settings(torch.device("cuda")) == (False, True)
    assert step.cudnn_settings(torch.device("cpu")) == (False,)


@pytest.mark.parametrize("cpus,jobs,expected", [(16, 11, (4, 4)), (16, 2, (2, 8)), (2, 11, (1, 2)), (64, 3, (3, 21))])
def test_compile_slots_fill_the_cores_with_four_threads_each(monkeypatch, cpus, jobs, expected):
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: cpus)
    assert parallel.compile_slots(jobs) == expected


def test_compile_slot_takes_a_free_slot_and_gives_it_back(tmp_path):
    with parallel.compile_slot(tmp_path, 2):
        with parallel.compile_slot(tmp_path, 2):  # the second slot: both now held
            for k in range(2):
                with open(tmp_path / f"compile-slot-{k}.lock", "a") as f, pytest.raises(BlockingIOError):
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    for k in range(2):  # both free again
        with open(tmp_path / f"compile-slot-{k}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_profile_sorts_kernels_into_categories_and_sums_them_per_step():
    import bench.step_profile as prof

    names = {  # kernel names as the profiler reports them on an H100/H200 (cuDNN, Inductor, aten)
        "sm90_xmma_wgrad_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64": "conv grad-weight",
        "sm90_xmma_dgrad_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nchw": "conv grad-input",
        "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc": "conv forward",
        "triton_red_fused__native_batch_norm_legit_functional_relu_3": "Inductor (fused Triton)",
        "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<...>": "optimizer (foreach)",
        "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>": "elementwise",
        "_dwconv_rows_kernel": "depthwise (kernels/, Triton)",
        "_dwconv_bwd_weight_taps_kernel": "depthwise (kernels/, Triton)",
        "void at::native::(anonymous namespace)::conv_depthwise2d_grad_weight_kernel<float>": "depthwise (PyTorch)",
        "dgrad2d_c1_k1_nhwc_specialized": "depthwise (PyTorch)",  # cuDNN's channels_last depthwise kernels
        "wgrad2d_c1_k1_nhwc_reduce": "depthwise (PyTorch)",
        "conv2d_c1_k1_nhwc_specialized": "depthwise (PyTorch)",
        "some_unknown_kernel": "other",
    }
    assert {k: prof.category(k) for k in names} == names
    times = {k: 100.0 * (i + 1) for i, k in enumerate(names)}  # µs per step
    cats, top = prof.breakdown("mobilenetv1", "(4) compiled + kernels", times, wall_us=11000.0)
    # the largest first: the three cuDNN depthwise kernels' 1.0 + 1.1 + 1.2 ms and aten's 0.9, summed
    assert cats[0]["category"] == "depthwise (PyTorch)" and cats[0]["ms per step"] == pytest.approx(4.2)
    assert cats[1]["category"] == "depthwise (kernels/, Triton)" and cats[1]["ms per step"] == 1.5
    assert sum(r["% of GPU time"] for r in cats[:-1]) == pytest.approx(100)
    assert cats[-1] == {"net": "mobilenetv1", "variant": "(4) compiled + kernels", "category": "GPU busy / wall",
                        "ms per step": 9.1, "% of GPU time": pytest.approx(82.72727)}
    assert [r["ms per step"] for r in top] == sorted((t / 1e3 for t in times.values()), reverse=True)
    assert {r["kernel"] for r in top} == set(names)  # every kernel, by its full name
    # The markdown lists each variant's TOP (12) longest: all but the shortest (the first name) of the 13.
    result = {"title": "t", "columns": ["net", "variant", "category", "ms per step", "% of GPU time"],
              "rows": cats, "kernels": top + [dict(r, variant="(3) compiled") for r in top]}
    md = prof.report(result, {"device": "test"})
    assert all(md.count(f"| {k} |") == 2 for k in list(names)[1:]) and next(iter(names)) not in md


def test_depthwise_bench_has_every_depthwise_layer_of_the_nets_and_no_other():
    """bench/depthwise/layers.py's layers are the CIFAR nets' (nets/mobilenet.py and nets/xception.py describe the
    strides): the 13 blocks of MobileNetV1 with stride 2 in blocks 2, 4 and 6 only, and Xception's 34 separable
    convolutions at 32x32 through the second entry block, 16x16 in the third, 8x8 through the middle flow
    and the exit block, 4x4 after its pool. Each layer as (channels, input size, stride)."""
    from bench.depthwise import compare, layers

    mobilenet = [(32, 32, 1), (64, 32, 2), (128, 16, 1), (128, 16, 2), (256, 8, 1), (256, 8, 2)] + [
        (512, 4, 1)] * 6 + [(1024, 4, 1)]
    xception = [(64, 32, 1), (128, 32, 1), (128, 32, 1), (256, 32, 1), (256, 16, 1), (728, 16, 1)] + [
        (728, 8, 1)] * 26 + [(1024, 4, 1), (1536, 4, 1)]
    assert list(layers.net_layers("mobilenetv1")) == mobilenet
    assert list(layers.net_layers("xception")) == xception
    table = layers.layer_table()
    assert [row[1:] for row in table] == list(dict.fromkeys(mobilenet + xception))
    assert dict((row[1:], row[0]) for row in table)[(1024, 4, 1)] == "mobilenet_v1+xception"
    assert set(compare.QUICK["shapes"]) <= {row[1:] for row in table}


def test_depthwise_summary_bounds_the_speedup_by_the_copy_bandwidth():
    """The summary's ceiling is PyTorch's best time over the time to move min_bytes at the copy bandwidth:
    at 1,000 GB/s, 1 MB takes 1 µs and 2 MB 2 µs; PyTorch's best at 4 and 18 µs gives ceilings 4 and 9, whose
    geometric mean, 6, puts the 3x target at 50% of the copy bandwidth. NCHW rows do not count."""
    from bench.depthwise import compare

    def row(layout, nbytes, torch_us, triton_us):
        return {"net": "t", "N": 1, "C": 8, "H": 4, "stride": 1, "dtype": "bf16", "layout": layout,
                "bytes fwd+bwd": nbytes, "torch fwd+bwd us": torch_us, "torch[bench] fwd+bwd us": torch_us,
                "triton fwd+bwd us": triton_us, "fwd+bwd speedup vs best": torch_us / triton_us,
                "fwd+bwd speedup vs default": torch_us / triton_us, "fwd speedup vs best": 1.0,
                "eager fwd+bwd speedup vs best": 1.0, "triton fwd % copy": 50.0,
                "triton fwd+bwd % copy": 100 * nbytes / 1e9 / triton_us, "out rel err": 0.0}

    rows = [row("channels_last", 10**6, 4.0, 2.0), row("channels_last", 2 * 10**6, 18.0, 9.0),
            row("nchw", 10**6, 100.0, 2.0)]
    s = compare.summarize(rows, copy_gbs=1000.0)
    assert s["ceiling: geomean fwd+bwd speedup vs best at 100% copy, bf16 channels_last"] == pytest.approx(6.0)
    assert s["ceiling: geomean fwd+bwd % copy the speedup target needs, bf16 channels_last"] == pytest.approx(50.0)
    pct = s["best PyTorch fwd+bwd % copy, bf16 channels_last: geomean, min, max"]
    assert pct == pytest.approx([(25 * 100 / 9) ** 0.5, 100 / 9, 25.0])
    assert s["geomean fwd+bwd speedup bf16 channels_last vs best"] == pytest.approx(2.0)


def test_depthwise_tiles_sweep_candidates():
    """`python -m bench depthwise tune=tiles` times the rule's tile first, then candidates of whole warps; the
    weight pass only where launch_bwd_weight runs gather (taps has tune=wgrad)."""
    from bench.depthwise import tune_tiles

    shapes = tune_tiles.tune_shapes()
    assert shapes[-len(tune_tiles.TUNE_NCHW):] == [(False, *s) for s in tune_tiles.TUNE_NCHW]
    for cl, C, H, s in shapes:
        kinds = tune_tiles.tuned_kinds(cl, tune_tiles.BATCH, C, H, s)
        assert kinds[:2] == ("fwd", "bwd_input") and len(kinds) in (2, 3)
        for kind in kinds:
            candidates = tune_tiles.candidates(kind, cl, C, H, s)
            assert candidates[0] == (None, tune_tiles.WGRAD_TARGET_PROGRAMS) and len(candidates) >= 3
            assert all(t is None or (t[0] >= 1 and t[2] in (2, 4, 8)) for t, _ in candidates)
    assert tune_tiles.tuned_kinds(True, 256, 32, 32, 1) == ("fwd", "bwd_input")  # taps: bf16 from 2**21


@needs_triton
def test_depthwise_tiles_sweep_with_fake_timer(monkeypatch):
    """The whole tiles sweep on one tiny layer, channels_last and NCHW (interpreted without CUDA): rows, the
    per-case table with the rule's tile against the fastest, the summary and its text. Two candidates a kernel,
    to stay quick in the interpreter."""
    import torch

    from bench import common
    from bench.depthwise import sweep, tune_tiles

    candidates = tune_tiles.candidates
    monkeypatch.setattr(tune_tiles, "candidates", lambda *case: candidates(*case)[:2])
    monkeypatch.setattr(tune_tiles, "TUNE_NCHW", ((8, 4, 1),))
    monkeypatch.setattr(tune_tiles, "BATCH", 2)
    timed = []

    fake_us = fake_timer(timed)

    result = tune_tiles.measure(DEVICE, [("tiny", 8, 4, 1)], time_us=fake_us, copy_gbs=100.0, compile_ahead=False)
    rows, best = result["rows"], result["best"]
    assert len(rows) == len(timed) == 2 * 3 * 2  # 2 layouts x 3 kernels (gather at this size) x 2 candidates
    assert len(best) == 6 and {r["layout"] for r in best} == {"channels_last", "nchw"}
    for r in best:
        case = [x for x in rows if all(x[k] == r[k] for k in tune_tiles.CASE_KEYS)]
        rule = next(x["us"] for x in case if x["config"] == "rule")
        assert r["rule / fastest"] == rule / min(x["us"] for x in case) and r["best us"] == min(x["us"] for x in case)
    checked = sum(r["rule / fastest"] <= sweep.RULE_TOL for r in best)
    key = "rule's tile (pointwise_config, wgrad_config): cases within 3% of the fastest"
    assert result["summary"][key] == f"{checked} of 6"
    head = common.header(torch.device("cpu"), "python -m bench depthwise tune=tiles")
    markdown = tune_tiles.to_markdown(result, head)
    assert key in markdown and "python -m bench depthwise tune=tiles" in markdown


def fake_loader(monkeypatch):
    import bench.loader

    result = {"title": "fake", "columns": ["a"], "rows": [{"a": 1}], "summary": {}}
    monkeypatch.setattr(bench.loader, "measure", lambda device, quick: dict(result))


def test_a_cpu_run_prints_and_writes_nothing_into_the_tree(monkeypatch, tmp_path, capsys):
    import bench.report

    fake_loader(monkeypatch)
    monkeypatch.setattr(bench.report, "RESULTS", tmp_path / "results")
    assert bench.report.main(["loader"]) == 0
    assert "fake" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()


def test_each_section_writes_its_own_file_where_out_says(monkeypatch, tmp_path):
    import bench.report

    fake_loader(monkeypatch)
    assert bench.report.main(["loader", f"out={tmp_path}"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loader-cpu.json", "loader-cpu.md"]
    assert "command:" in (tmp_path / "loader-cpu.md").read_text()


def test_members_section_times_each_k_and_form_against_k1_in_one_run(monkeypatch):
    """bench.members on the CPU at a toy size: one row per K and form (K = 1 once, the single run's step) with
    images/s summed over members and the ratios to K = 1 of the same run; a K that runs out of memory is a row
    saying so, not a crash."""
    from bench import members

    real = members.members_step

    def step(model, options, k, device, batch=members.BATCH, graphs=True, form="auto"):
        if k == 4:
            raise torch.OutOfMemoryError("fake")
        return real(model, {"width": 4}, k, device, batch=4, graphs=graphs, form=form)

    monkeypatch.setattr(members, "members_step", step)
    rows = members.measure_net("toy", "resnet18", {}, (1, 2, 4), torch.device("cpu"), calls=1, rounds=1, batch=4,
                               forms=("fold", "unroll", "auto"))
    # auto's row names the trainer's choice for the net (full-width ResNet-18: unroll).
    assert [(r["form"], r["K"]) for r in rows] == [("single", 1), ("auto (unroll)", 2), ("fold", 2), ("unroll", 2),
                                                   ("auto (unroll)", 4), ("fold", 4), ("unroll", 4)]
    one, *twos, _, oom, _ = rows
    assert one["vs K=1"] == 1 and oom["note"] == "out of GPU memory"
    for two in twos:
        assert two["images/s (all members)"] > 0
        assert two["vs K=1"] == pytest.approx(two["images/s (all members)"] / one["images/s (all members)"])
        assert two["per member vs K=1"] == pytest.approx(two["vs K=1"] / 2)


def test_members_jobs_are_one_per_net_with_all_its_ks():
    from bench import members

    assert members.parallel_jobs([0, 2], (1, 2, 4, 8)) == [["0", "1,2,4,8", "false", "auto"],
                                                           ["2", "1,2,4,8", "false", "auto"]]
    assert members.parallel_jobs([1], (1, 8), ceiling=True, forms=("fold", "unroll")) == [
        ["1", "1,8", "true", "fold,unroll"]]


def test_members_ceiling_times_one_net_at_k_times_the_batch_beside_each_k(monkeypatch):
    """ceiling=true: beside each K > 1, the single net's step at K times the batch, timed in the same alternation,
    as images/s against K = 1 (a fake clock: every step takes 1 s, so the single net at 2 x batch does twice
    K = 1's images/s and the members step of K = 2 as much)."""
    from bench import members

    built = []

    def step(model, options, k, device, batch=members.BATCH, graphs=True, form="auto"):
        built.append((k, batch))
        return lambda: None

    monkeypatch.setattr(members, "members_step", step)
    monkeypatch.setattr(members, "warm", lambda f, device: 0.0)
    monkeypatch.setattr(members, "alternating_medians", lambda steps, device, calls, rounds: dict.fromkeys(steps, 1.0))
    rows = members.measure_net("toy", "resnet18", {}, (1, 2), torch.device("cpu"), 1, 1, batch=4, ceiling=True)
    assert built == [(1, 4), (2, 4), (1, 8)]
    one, two = rows
    assert "one net, K x batch, vs K=1" not in one
    assert two["one net, K x batch, vs K=1"] == pytest.approx(2.0) and two["vs K=1"] == pytest.approx(2.0)
    assert [r["K"] for r in members.measure_net("toy", "resnet18", {}, (1, 2), torch.device("cpu"), 1, 1,
                                                batch=4)] == [1, 2] and built[3:] == [(1, 4), (2, 4)]


JOB_MODULE = """
import sys, time
from pathlib import Path
from bench.parallel import work

def prepare(name, seconds, turn):
    if name == "broken":
        raise ValueError("cannot build broken")
    if name == "cached":  # a long compile the first time, quick once its first try left its file behind
        marker = Path(seconds)
        seconds = 0.1 if marker.exists() else 60
        marker.touch()
    time.sleep(float(seconds))
    return name, time.time()

def measure(prepared):
    start = time.time()
    time.sleep(0.2)
    return [{"job": prepared[0], "ready": prepared[1], "start": start, "end": time.time()}]

if __name__ == "__main__":
    work(sys.argv[1:], prepare, measure)
"""


def test_parallel_jobs_are_timed_one_at_a_time_after_the_last_is_ready(monkeypatch, tmp_path):
    """bench.parallel end to end with a toy job module: every job's rows come back in job order, no two timings
    overlap (the GPU lock) and every timing starts after the last job is ready (the barrier); a job whose
    prepare raises is named with its error's last line, and one still compiling when only the timings' reserve
    is left before the deadline is stopped and named while the ready ones are timed."""
    from bench import parallel

    (tmp_path / "toyjob.py").write_text(JOB_MODULE)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{parallel.Path(parallel.__file__).parents[1]}")
    monkeypatch.setattr(parallel, "compile_slots", lambda jobs: (jobs, 1))  # all compile at once
    monkeypatch.setattr(parallel, "jobs_at_once", lambda jobs: jobs)  # in one wave
    monkeypatch.setattr(parallel, "TIMING_RESERVE_S", 1.0)  # seconds per job kept for its timing
    jobs = [["a", "0.1"], ["b", "0.5"], ["broken", "0"], ["c", "0.1"]]
    results, problems = parallel.run_jobs("toyjob", jobs, deadline_s=10)
    rows = [r[0] for r in results if r]
    assert [r[0]["job"] if r else None for r in results] == ["a", "b", None, "c"]
    spans = sorted((r["start"], r["end"]) for r in rows)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert min(r["start"] for r in rows) >= max(r["ready"] for r in rows)
    assert problems == ["broken 0: failed (exit 1): ValueError: cannot build broken"]
    results, problems = parallel.run_jobs("toyjob", [["a", "0"], ["slow", "60"]], deadline_s=5)
    assert [r[0]["job"] if r else None for r in results] == ["a", None]  # a is timed once slow is stopped
    assert problems == ["slow 60: not compiled within 3 s of the 5 s deadline"]


def test_a_job_stopped_while_compiling_is_tried_again_with_the_time_the_waves_leave(monkeypatch, tmp_path):
    """Two waves: the first's two jobs are stopped while compiling at its share of the deadline, the second
    ends early, and with the time left both are tried again: the one whose first try left its compile behind
    (a file, here) is timed; the other is named with both tries."""
    from bench import parallel

    (tmp_path / "toyjob.py").write_text(JOB_MODULE)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{parallel.Path(parallel.__file__).parents[1]}")
    monkeypatch.setattr(parallel, "compile_slots", lambda jobs: (jobs, 1))
    monkeypatch.setattr(parallel, "jobs_at_once", lambda jobs: 2)
    monkeypatch.setattr(parallel, "TIMING_RESERVE_S", 0.5)
    jobs = [["cached", str(tmp_path / "compiled")], ["slow", "60"], ["a", "0"]]
    results, problems = parallel.run_jobs("toyjob", jobs, deadline_s=9)
    assert [r[0]["job"] if r else None for r in results] == ["cached", None, "a"]
    assert len(problems) == 1 and re.fullmatch(r"slow 60: not compiled within 5 s of the 6 s deadline; tried again: "
                                               r"not compiled within \d+ s of the \d+ s deadline", problems[0])


def test_graph_variants_are_recorded_and_timed_under_cudnn_benchmark_on_only(monkeypatch):
    """A CUDA graph replays the convolution algorithms chosen when it was recorded, so prepare_net warms a graph
    variant (its recording) with cudnn.benchmark on, and time_net times it under that setting only; the other
    variants are recorded under, and timed with, both settings."""
    from bench import step as bench_step

    calls = []
    log = lambda tag: lambda: calls.append((tag, torch.backends.cudnn.benchmark))  # noqa: E731

    def medians(fns, device, n, rounds):
        for f in fns.values():
            f()
        return dict.fromkeys(fns, 0.1)

    G, B = bench_step.GRAPHS, bench_step.BASELINE
    monkeypatch.setattr(bench_step, "cudnn_settings", lambda device: (False, True))
    monkeypatch.setattr(bench_step, "make_variant", lambda name, device, v: (log(("train", v)), log(("infer", v))))
    monkeypatch.setattr(bench_step, "alternating_medians", medians)
    prepared = bench_step.prepare_net("resnet18", torch.device("cpu"), [B, G])
    assert {on for tag, on in calls if tag[1] == G} == {True} and {on for tag, on in calls if tag[1] == B} == {False}
    calls.clear()
    rows = bench_step.time_net("resnet18", torch.device("cpu"), prepared, 1, 1)
    assert [(r["variant"], r["cudnn.benchmark"]) for r in rows] == [(B, "off"), (B, "on"), (G, "on")]
    assert {on for tag, on in calls if tag[1] == G} == {True}
    assert {on for tag, on in calls if tag[1] == B} == {False, True}
    assert torch.backends.cudnn.benchmark is False


def test_parallel_jobs_run_in_waves_that_each_end_before_the_next_starts(monkeypatch, tmp_path):
    """Two jobs at once: the third is built only after the first two were timed and done (it holds no GPU
    memory beside theirs), the rows still in job order; off CUDA, one wave of every job."""
    from bench import parallel

    if not torch.cuda.is_available():
        assert parallel.jobs_at_once(5) == 5
    (tmp_path / "toyjob.py").write_text(JOB_MODULE)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{parallel.Path(parallel.__file__).parents[1]}")
    monkeypatch.setattr(parallel, "compile_slots", lambda jobs: (jobs, 1))
    monkeypatch.setattr(parallel, "jobs_at_once", lambda jobs: 2)
    monkeypatch.setattr(parallel, "TIMING_RESERVE_S", 1.0)
    results, problems = parallel.run_jobs("toyjob", [["a", "0.1"], ["b", "0.1"], ["c", "0.1"]], deadline_s=20)
    assert problems == [] and None not in results, problems
    a, b, c = (r[0] for r in results)
    assert [a["job"], b["job"], c["job"]] == ["a", "b", "c"] and problems == []
    assert c["ready"] - 0.1 >= max(a["end"], b["end"])  # c's build (0.1 s) began after a and b were timed
    assert max(a["ready"], b["ready"]) <= min(a["start"], b["start"])


def test_members_end_to_end_runs_each_command_and_can_be_made_in_parts(monkeypatch, tmp_path, capsys):
    """bench.members.end_to_end with the trainer's command recorded, not run: a members run per form and the K
    single runs (seed s, the members' split), each timed; a row per form, the ratio of the totals only when
    one call made that form's members run and all K singles; each members run starts from a compile cache of
    its own and the single runs share one; runs= makes some of them, in the folder of caches named by cache=;
    each run's wall seconds are printed as it ends."""
    from bench import members

    calls, clock = [], iter(range(0, 1000, 10))
    monkeypatch.setattr(members.time, "perf_counter", lambda: float(next(clock)))
    monkeypatch.setattr(members.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw["env"])))
    rows = members.end_to_end("mobilenetv1", "mobilenetv1", {}, 2, None, "data.tar.gz", forms=("fold", "unroll"))
    words = [cmd[3:] for cmd, _ in calls]
    assert [w[-3:-1] for w in words] == [["members=2", "members_form=fold"], ["members=2", "members_form=unroll"],
                                         ["seed=0", "split_seed=0"], ["seed=1", "split_seed=0"]]
    assert not any(w.startswith("epochs=") for w in words[0])  # the recipe's epochs
    caches = [env["TORCHINDUCTOR_CACHE_DIR"] for _, env in calls]
    assert len(set(caches[:3])) == 3 and caches[3] == caches[2]
    assert [r["form"] for r in rows] == ["fold", "unroll"]
    assert [r["members=K s"] for r in rows] == [10, 10] and rows[1]["K single runs s"] == 20
    assert rows[0]["ratio"] == rows[1]["ratio"] == 0.5
    assert capsys.readouterr().err.splitlines() == [  # each run's wall as it ends, for a call cut short
        "end_to_end mobilenetv1 K=2: members-fold 10.0 s", "end_to_end mobilenetv1 K=2: members-unroll 10.0 s",
        "end_to_end mobilenetv1 K=2: 0 10.0 s", "end_to_end mobilenetv1 K=2: 1 10.0 s"]
    calls.clear()
    part, = members.end_to_end("mobilenetv1", "mobilenetv1", {}, 2, 3, "data.tar.gz", runs=["1"], cache=str(tmp_path))
    assert len(calls) == 1 and "seed=1" in calls[0][0] and "epochs=3" in calls[0][0]
    assert calls[0][1]["TORCHINDUCTOR_CACHE_DIR"] == f"{tmp_path}/singles/inductor"
    assert part["seed 1 s"] == 10 and "ratio" not in part and "members=K s" not in part
    from bench.report import section_options

    options = section_options("members", {"e2e": "true", "epochs": "recipe", "runs": "members,0", "cache": "c"})
    assert options["epochs"] is None and options["runs"] == ["members", "0"] and options["cache"] == "c"
    assert options["ceiling"] is False and section_options("members", {"ceiling": "true"})["ceiling"] is True
    assert options["forms"] == ("auto",) and options["steps"] is True
    assert section_options("members", {"e2e": "only"})["steps"] is False  # whole runs alone
    with pytest.raises(SystemExit, match="unknown e2e=yes; one of true"):
        section_options("members", {"e2e": "yes"})
    assert section_options("members", {"members_form": "fold,unroll"})["forms"] == ("fold", "unroll")


@pytest.mark.parametrize("timed", [True, False])
def test_members_step_chooses_cudnn_algorithms_as_the_trainer(monkeypatch, timed):
    """The members bench times the step with cuDNN's algorithms chosen as a run chooses them (the config's
    cudnn_benchmark, through train.step.choose_cudnn_algorithms), not with PyTorch's default heuristics."""
    from bench import members
    from train.config import Config
    from train.step import choose_cudnn_algorithms

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not timed)
    choose_cudnn_algorithms(torch.device("cpu"), timed)
    assert torch.backends.cudnn.benchmark is (not timed)  # the CPU has no cuDNN to set
    choose_cudnn_algorithms(torch.device("cuda"), timed)
    assert torch.backends.cudnn.benchmark is timed
    seen = []
    monkeypatch.setattr(members, "choose_cudnn_algorithms", lambda device, b: seen.append((device.type, b)))
    members.members_step("resnet18", {"width": 4}, 1, torch.device("cpu"), batch=2)
    assert seen == [("cpu", Config().cudnn_benchmark)] and Config().cudnn_benchmark is True


def test_members_nets_pick_rows_by_label_before_model():
    """nets= for the members section: a label picks its row only ("mobilenetv1", not "mobilenetv1 triton")."""
    from bench import members

    labels = [n[0] for n in members.NETS]
    assert [labels[i] for i in members.chosen_rows(["mobilenetv1"])] == ["mobilenetv1"]
    assert [labels[i] for i in members.chosen_rows(["resnet18 width 16", "vit"])] == ["resnet18 width 16", "vit"]
    assert members.chosen_rows(None) == list(range(len(labels)))
    assert members.chosen_rows(["alexnet"]) == []


def test_members_e2e_only_makes_the_whole_runs_without_timing_the_step(monkeypatch):
    """e2e=only (steps=False): measure makes each K's end-to-end comparison and builds no step to time."""
    from bench import members

    made = []
    monkeypatch.setattr(members, "measure_net", lambda *a, **kw: pytest.fail("the step was timed"))
    monkeypatch.setattr(members, "end_to_end", lambda label, model, options, k, *a: made.append((label, k)) or [
        {"net": label, "K": k}])
    result = members.measure("cpu", names=["mobilenetv1"], ks=(1, 4), e2e=True, steps=False)
    assert made == [("mobilenetv1", 4)] and result["rows"] == [] and result["end_to_end"] == [
        {"net": "mobilenetv1", "K": 4}]


def test_members_end_to_end_rows_are_rendered_in_the_markdown():
    """The .md of a members result with e2e=true shows the whole runs' table (every key of its rows), not only
    the throughput rows."""
    from bench.common import to_markdown

    result = {"title": "t", "columns": ["net", "K"], "rows": [{"net": "a", "K": 2}],
              "end_to_end": [{"net": "a", "form": "unroll", "K": 2, "members=K s": 100.0, "seed 0 s": 60.0},
                             {"net": "a", "form": "fold", "K": 2, "seed 1 s": 70.0}]}
    md = to_markdown(result)
    assert "| net | form | K | members=K s | seed 0 s | seed 1 s |" in md
    assert "| a | fold | 2 | n/a | n/a | 70.00 |" in md


def test_members_e2e_only_markdown_has_the_whole_runs_alone(monkeypatch):
    """e2e=only: the .md holds the whole runs' table and its note, without an empty step table or the step's
    timing note."""
    from bench import members
    from bench.common import to_markdown

    monkeypatch.setattr(members, "end_to_end", lambda *a: [{"net": "mobilenetv1", "K": 4, "members=K s": 100.0}])
    md = to_markdown(members.measure("cpu", names=["mobilenetv1"], ks=(1, 4), e2e=True, steps=False))
    assert md.startswith("End to end, wall seconds (compile included):")
    assert "images/s" not in md and "Median of" not in md and "| mobilenetv1 | 4 | 100 |" in md
