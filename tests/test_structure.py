"""The shape of the house, checked by walking the source: every kernels/ module imports on its own (no import
cycle, nothing that needs another module imported first); no module imports another module's private name; no
file of the library folders passes 600 lines; no comment or docstring there narrates history (dates, times of
day, commit hashes, device-job paths under results/). New files are covered as they appear."""

import ast
import functools
import io
import json
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "nets", "data", "train", "bench")  # ours: the folders an import can name
LIBRARY = ("kernels", "nets", "train", "data")  # held to the size and history checks
MAX_LINES = 600
HISTORY = {
    "a date": re.compile(r"\b20\d\d-\d\d-\d\d\b"),
    "a time of day": re.compile(r"\b\d\d:\d\d UTC\b"),
    # after "git history", or after "at" with a letter and a digit ("at 1048576" is a size)
    "a commit hash": re.compile(r"git history(?:\s+at)?\s+`?[0-9a-f]{7,40}\b"
                                r"|\bat\s+`?(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b"),
    "a path under results/": re.compile(r"(?<![\w./-])results/"),
}


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------------------
# (a) every kernels/ module is importable first, in a fresh interpreter

KERNEL_MODULES = [module_name(p) for p in python_files("kernels")]


# One fresh interpreter imports the libraries ours build on (torch, triton, torch's dynamo, which triton_op pulls
# in), then forks a child per module: each child's first import of the project is that module, as in a fresh
# interpreter, without paying torch's import 20 times (41 s of the CPU suite as separate processes).
FORK_EACH = """
import json, os, sys, traceback
import torch, torch._dynamo, triton, triton.language  # noqa: F401  (not ours: imported once, before the fork)
results = {}
for module in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            __import__(module)
            message, code = "", 0
        except BaseException:
            message, code = traceback.format_exc(), 1
        os.write(w, message.encode())
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        message = f.read()
    results[module] = [os.waitpid(pid, 0)[1] == 0, message]
print(json.dumps(results))
"""


@functools.cache
def _first_imports() -> dict[str, list]:
    """{module: [imported, traceback]} for every kernels/ module, each the first of ours in its process."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", FORK_EACH, *KERNEL_MODULES], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_module_that_needs_another_imported_first_fails_the_check(tmp_path):
    """The check itself: a module importing a name its package has not defined yet fails, alone."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("from cyclic.b import B\nA = 1\n")
    (package / "b.py").write_text("from cyclic import A\nB = A\n")
    done = subprocess.run([sys.executable, "-c", FORK_EACH, "cyclic.b"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    imported, message = json.loads(done.stdout.splitlines()[-1])["cyclic.b"]
    assert not imported and "partially initialized module" in message


@pytest.mark.parametrize("module", KERNEL_MODULES)
def test_kernel_module_imports_first_in_a_fresh_interpreter(module):
    imported, message = _first_imports()[module]
    assert imported, message.strip().splitlines()[-3:]


# ---------------------------------------------------------------------------------------------------------
# (b) no private names across modules

def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_ours(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in PACKAGES


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _absolute(node: ast.ImportFrom, path: Path) -> str | None:
    """The module an ImportFrom names, relative imports resolved against the file's package."""
    if not node.level:
        return node.module
    package = module_name(path).split(".")
    package = package if path.name == "__init__.py" else package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(path: Path) -> list[str]:
    """`from ours import _name`, and `_name` read as an attribute of one of our modules bound by an import
    (`import kernels.x as m; m._name`, `from kernels import x; x._name`), in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found, modules = [], {}  # modules: local name -> our module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, path)
            if not _is_ours(source):
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"{_rel(path)}:{node.lineno}: from {source} import {alias.name}")
                elif _is_module(f"{source}.{alias.name}"):
                    modules[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_ours(alias.name):
                    local = alias.asname or alias.name.split(".")[0]
                    modules[local] = alias.name if alias.asname else local
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in modules:
                owner = ".".join([modules[value.id], *reversed(chain)])
                if _is_module(owner):
                    found.append(f"{_rel(path)}:{node.lineno}: {owner}.{node.attr}")
    return found


def test_the_private_name_check_sees_both_forms():
    """A probe file: a private name imported, and read through a module bound three ways; torch's and dunders
    pass."""
    mod = ROOT / "kernels" / "_structure_probe.py"
    source = ("from kernels.depthwise.helpers import _dot3, next_pow2\nfrom kernels.depthwise import rules\n"
              "import kernels.depthwise.helpers as h\nimport kernels.depthwise\nfrom torch import _C\n"
              "x = rules._TAPS_TILE + h._dot3 + kernels.depthwise.helpers._dot3 + rules.__name__\n")
    try:
        mod.write_text(source)
        found = sorted(line.split(": ", 1)[1] for line in private_imports(mod))
    finally:
        mod.unlink()
    assert found == ["from kernels.depthwise.helpers import _dot3", "kernels.depthwise.helpers._dot3",
                     "kernels.depthwise.helpers._dot3", "kernels.depthwise.rules._TAPS_TILE"]


@pytest.mark.parametrize("folder", PACKAGES)
def test_no_module_imports_a_private_name_of_another(folder):
    found = [line for path in python_files(folder) for line in private_imports(path)]
    assert not found, "\n".join(found)


# ---------------------------------------------------------------------------------------------------------
# (c) file sizes, (d) no history in comments and docstrings

@pytest.mark.parametrize("folder", LIBRARY)
def test_no_library_file_passes_600_lines(folder):
    sizes = {_rel(p): len(p.read_text().splitlines()) for p in python_files(folder)}
    assert not {p: n for p, n in sizes.items() if n > MAX_LINES}


def comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring of a file."""
    source = path.read_text()
    found = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                found.append((node.body[0].lineno, doc))
    return found


def history_in(path: Path) -> list[str]:
    return [f"{_rel(path)}:{line}: {what}: {m.group(0)!r}" for line, text in comments_and_docstrings(path)
            for what, pattern in HISTORY.items() for m in pattern.finditer(text)]


def test_the_history_check_sees_each_form():
    """Each pattern on a sentence that has it; sizes, bench/results/ and shapes pass."""
    text = ("run at 8b575e1 on 2026-12-02, 19:24 UTC (results/h200-x.log; in git history 2627909); at 1024 "
            "elements, bench/results/x.md, a 32x32 map")
    found = [what for what, pattern in HISTORY.items() for _ in pattern.finditer(text)]
    assert found == ["a date", "a time of day", "a commit hash", "a commit hash", "a path under results/"]


@pytest.mark.parametrize("folder", LIBRARY)
def test_no_comment_or_docstring_narrates_history(folder):
    found = [line for path in python_files(folder) for line in history_in(path)]
    assert not found, "\n".join(found)
