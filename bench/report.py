"""Runs the sections asked for; each section's latest result per device goes to <out>/<section>-<device>.json
and .md (out= defaults to bench/results/ on a GPU; a CPU run writes only where out= says)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

from bench.common import device_slug, header, to_markdown

SECTIONS = ("step", "loader", "depthwise", "attention", "members")
CPU_SECTIONS = ("loader",)  # the others measure GPU kernels and GPU training
RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str]) -> tuple[list[str], dict]:
    sections, opts = [], {}
    for word in argv:
        key, sep, value = word.partition("=")
        if sep:
            opts[key] = value
        elif word in SECTIONS:
            sections.append(word)
        else:
            raise SystemExit(f"error: unknown section {word!r}; sections: {', '.join(SECTIONS)}")
    return sections or list(SECTIONS), opts


def variant_labels(value: str) -> tuple[str, ...]:
    """variants=1,3g,4g -> ("1", "3g", "4g"); empty: all. An unknown label is a one-line error."""
    from bench.step import VARIANT_LABELS

    labels = tuple(v.strip().strip("()") for v in value.split(",") if v.strip())
    unknown = [v for v in labels if v not in VARIANT_LABELS]
    if unknown:
        raise SystemExit(f"error: unknown step variant {', '.join(unknown)}; variants: {','.join(VARIANT_LABELS)}")
    return labels


def main(argv: list[str]) -> int:
    sections, opts = parse(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # The tree keeps GPU results; a CPU run (a laptop, CI) prints its tables and leaves the source tree alone.
    out = Path(opts["out"]) if "out" in opts else RESULTS if device.type == "cuda" else None
    if "tune" in opts:
        return tune(sections, opts["tune"], device, out or RESULTS)
    quick = opts.get("quick", "false").lower() == "true"
    for name in sections:
        if device.type != "cuda" and name not in CPU_SECTIONS:
            print(f"skipping {name}: it measures the GPU and no CUDA device is visible")
            continue
        result = importlib.import_module(f"bench.{name}").measure(
            device=device.type, quick=quick or device.type != "cuda", **section_options(name, opts))
        result["header"] = header(device)
        print(to_markdown(result))
        if out is not None:
            write(out / f"{name}-{device_slug(device)}.json", name, result)
    return 0


def section_options(name: str, opts: dict) -> dict:
    """The command line's options that a section's `measure` takes."""
    if name == "members":
        epochs = opts.get("epochs", "3")
        e2e = opts.get("e2e", "false").lower()
        if e2e not in ("true", "false", "only"):
            raise SystemExit(f"error: unknown e2e={e2e}; one of true (the step's timing, then whole runs), only "
                             "(whole runs alone), false")
        kwargs = {"e2e": e2e != "false", "steps": e2e != "only",
                  "epochs": None if epochs == "recipe" else int(epochs),
                  "parallel": opts.get("parallel", "false").lower() == "true",
                  "deadline_s": float(opts.get("deadline", 3600)), "cache": opts.get("cache"),
                  "runs": opts["runs"].split(",") if "runs" in opts else None,
                  "ceiling": opts.get("ceiling", "false").lower() == "true",
                  "forms": tuple(opts.get("members_form", "auto").split(","))}
        if "ks" in opts:
            kwargs["ks"] = tuple(int(k) for k in opts["ks"].split(","))
        if "data" in opts:
            kwargs["data"] = opts["data"]
        if "nets" in opts:
            kwargs["names"] = opts["nets"].split(",")
        return kwargs
    if name != "step":
        return {}
    kwargs = {"parallel": opts.get("parallel", "false").lower() == "true",
              "deadline_s": float(opts.get("deadline", 3600)),
              "only": variant_labels(opts.get("variants", ""))}
    if "nets" in opts:
        kwargs["names"] = opts["nets"].split(",")
    return kwargs


def write(path: Path, name: str, result: dict) -> None:
    """One section's result as `path` (.json) and, rendered under its header, the .md beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    h = result["header"]
    md = [f"# {name} on {h['device']}", "", "- " + ", ".join(f"{k}: {v}" for k, v in h.items() if k != "command"),
          f"- command: `{h['command']}`", "", to_markdown(result)]
    path.with_suffix(".md").write_text("\n".join(md))
    print(f"wrote {path} and {path.with_suffix('.md')}")


def tune(sections: list[str], kind: str, device: torch.device, out: Path) -> int:
    """`python -m bench depthwise tune=KIND` (one of the depthwise sweeps, bench.depthwise.TUNES, written to its
    own file under `out`) or `python -m bench attention tune=true` (the attention launch configurations, printed
    per shape); on a machine without CUDA it says so and writes nothing."""
    if sections not in (["depthwise"], ["attention"]):
        raise SystemExit("error: tune= is an option of one kernel section: python -m bench depthwise tune=KIND "
                         "or python -m bench attention tune=true")
    if sections == ["depthwise"]:
        from bench import depthwise

        if kind not in depthwise.TUNES:
            raise SystemExit(f"error: unknown tune={kind}; one of {', '.join(depthwise.TUNES)}")
    if device.type != "cuda":
        print(f"skipping {sections[0]} tune={kind}: it times CUDA kernels and no CUDA device is visible")
        return 0
    if sections == ["attention"]:
        from bench import attention

        attention.tune(device.type)
    else:
        depthwise.tune(kind, device, out)
    return 0
