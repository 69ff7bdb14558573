"""Runs the sections asked for and merges their results into one file per device."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

from bench.common import device_slug, header, to_markdown

SECTIONS = ("step", "loader", "depthwise", "attention")
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
    quick = opts.get("quick", "false").lower() == "true"
    path = Path(opts.get("out", RESULTS)) / f"{device_slug(device)}.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    for name in sections:
        if device.type != "cuda" and name not in CPU_SECTIONS:
            print(f"skipping {name}: it measures the GPU and no CUDA device is visible")
            continue
        module = importlib.import_module(f"bench.{name}")
        kwargs = {}
        if name == "step":
            kwargs["parallel"] = opts.get("parallel", "false").lower() == "true"
            kwargs["deadline_s"] = float(opts.get("deadline", 3600))
            kwargs["gpu_lock"] = opts.get("gpu_lock", "")
            kwargs["only"] = variant_labels(opts.get("variants", ""))
            if "nets" in opts:
                kwargs["names"] = opts["nets"].split(",")
        result = module.measure(device=device.type, quick=quick or device.type != "cuda", **kwargs)
        result["header"] = header(device)
        merged[name] = result
        print(to_markdown(result))
    if merged:
        write(path, merged)
    return 0


def write(path: Path, merged: dict) -> None:
    """The sections as <device>.json and, rendered, <device>.md beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1, default=float) + "\n")
    md = [f"# Benchmarks on {next(iter(merged.values()))['header']['device']}", ""]
    for name in SECTIONS:
        if name in merged:
            h = merged[name]["header"]
            md += [f"## {name}", "", "- " + ", ".join(f"{k}: {v}" for k, v in h.items() if k != "command"),
                   f"- command: `{h['command']}`", "", to_markdown(merged[name])]
    path.with_suffix(".md").write_text("\n".join(md))
    print(f"wrote {path} and {path.with_suffix('.md')}")
