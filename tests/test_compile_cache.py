"""Where the trainer keeps compiled work, how it tells a cold compile from a cached one, and its heartbeat."""

import time

from train import compile_cache


def test_the_cache_goes_under_the_users_cache_folder_unless_they_chose_one(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.CACHE_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.keep_compiled_work() == str(tmp_path / "cifar-zoo" / "compile")
    monkeypatch.setenv(compile_cache.CACHE_VARIABLE, "/somewhere/else")
    assert compile_cache.keep_compiled_work() == "/somewhere/else"


def test_a_compile_is_cold_when_any_graph_was_built_and_cached_when_none_was():
    before = {"hits": 3, "misses": 5}
    assert compile_cache.describe(before, {"hits": 3, "misses": 9}).startswith("cold: 4 of 4 graphs built")
    assert compile_cache.describe(before, {"hits": 5, "misses": 6}).startswith("cold: 1 of 3 graphs built")
    assert compile_cache.describe(before, {"hits": 7, "misses": 5}) == "cached: 4 graphs from the compile cache"


def test_the_heartbeat_logs_while_the_block_runs_and_stops_after():
    lines = []
    with compile_cache.heartbeat(lines.append, "compiling", every_s=0.05):
        time.sleep(0.18)
    seen = len(lines)
    time.sleep(0.12)
    assert 2 <= seen == len(lines) and all(line.startswith("compiling... ") for line in lines)
