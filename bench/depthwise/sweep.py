"""What the tuning sweeps (`python -m bench depthwise tune=...`) share: the check of a rule's choice against the
fastest candidate timed on the GPU at hand, and their markdown."""

from bench.common import fine_cell, table
from bench.depthwise.layers import MATCH_TOL

RULE_TOL = 1.03  # a rule's choice within 3% of the fastest candidate counts as the fastest (run-to-run spread)


def over_tolerance(rows: list[dict]) -> list[dict]:
    """The timed rows whose output differs from the reference's by more than MATCH_TOL for their dtype."""
    return [r for r in rows if r["rel err"] > MATCH_TOL[r["dtype"]]]


def accuracy_check(rows: list[dict], against: str) -> dict:
    """Summary lines: the largest relative error of the candidates' outputs `against` the reference, and how
    many rows pass MATCH_TOL (a fast candidate that computes something else is no candidate)."""
    return {f"max rel err {against}": max(r["rel err"] for r in rows),
            "rows with rel err over MATCH_TOL": len(over_tolerance(rows))}


def rule_check(best: list[dict], what: str) -> dict:
    """Summary lines from the per-case rows' "rule / fastest" (the rule's time over the fastest timed): at how
    many cases the rule's choice is within RULE_TOL of the fastest, and the worst case."""
    if not best:
        return {}
    worst = max(best, key=lambda r: r["rule / fastest"])
    within = sum(r["rule / fastest"] <= RULE_TOL for r in best)
    case = {k: v for k, v in worst.items() if k in ("kind", "layout", "net", "N", "C", "H", "stride", "dtype",
                                                    "epilogue")}
    return {f"{what}: cases within {100 * (RULE_TOL - 1):.0f}% of the fastest": f"{within} of {len(best)}",
            f"{what}: slowest against the fastest (rule / fastest)": worst["rule / fastest"],
            f"{what}: at": case}


def sweep_markdown(result: dict, head: dict, summary_intro: str, per_case_intro: str, module: str) -> str:
    """The markdown of a sweep: title, header, summary, the per-case table (result["best"]) and every timed call
    (result["rows"])."""
    lines = [f"# {result['title']}", ""] + [f"- {k}: {v}" for k, v in head.items()]
    lines += ["", summary_intro, ""] + [f"- {k}: {fine_cell(v)}" for k, v in result["summary"].items()]
    lines += ["", per_case_intro, ""] + table(result["best_columns"], result["best"], fine_cell)
    lines += ["", "Every timed call:", ""] + table(result["columns"], result["rows"], fine_cell)
    lines += ["", f"Times in µs per call; see the docstring of {module} for what is timed and the bytes counted.", ""]
    return "\n".join(lines)
