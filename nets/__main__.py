"""`python -m nets`: every registered net with its exact parameter counts and forward FLOPs at 32x32."""

import nets


def table() -> str:
    rows = [
        "| net | params (10 classes) | params (100 classes) | forward GFLOPs / image (32x32) |",
        "|---|---:|---:|---:|",
    ]
    for name in nets.names():
        n10, n100 = nets.build(name, 10), nets.build(name, 100)
        rows.append(f"| {name} | {n10.param_count()} | {n100.param_count()} | {n10.flops() / 1e9:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
