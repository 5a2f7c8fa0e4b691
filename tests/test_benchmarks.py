"""The benchmark scripts still run: each one's smoke mode, in a fresh process (slow).

A benchmark is not a test, but a script that no longer runs reports nothing; these
run each script with its smallest settings and check that it exits cleanly and
prints its table. ``bench_density.py`` needs the ``bench`` extra (flow_matching)
for its speed part and runs without it otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.slow

CASES = {
    "quality": (["bench_quality.py", "--quick", "--datasets", "1to5", "--jobs", "2",
                 "--test-draws", "2"], "| HRF3, exact |"),
    "quality_all_splits": (["bench_quality.py", "--quick", "--datasets", "1to5", "--oracle-only",
                            "--depths", "2", "--nfes", "4", "--all-splits", "--test-draws", "2"],
                           "NFE 4 test, every split: 1x4 "),
    "quality_depths": (["bench_quality.py", "--quick", "--datasets", "six_gaussians", "--no-oracle",
                        "--depths", "1", "2"], "| HRF2 |"),
    "couplings": (["bench_couplings.py", "--quick"], "| model |"),
    "density": (["bench_density.py", "--quick", "--parts", "1to2"], "| model | NLL bits/dim |"),
    "throughput": (["bench_throughput.py", "--quick"], "ratio sampler / pure field cost"),
    "memory": (["bench_memory.py", "--n-points", "20000", "--chunk-sizes", "4096",
                "--threads", "1"], "MiB"),
    "snapshot": (["bench_snapshot.py", "--quick"], "| unet_channels |"),
    "sinkhorn_reg": (["bench_sinkhorn_reg.py", "--batch", "32", "--repeats", "2", "--regs", "0.05"],
                     "| exact |"),
    "probe_noise": (["bench_probe_noise.py", "--rows", "8", "--seeds", "3", "--n-draws", "1",
                     "--n-iter", "5"], "| row-row corr |"),
    "density_draws": (["bench_density_draws.py", "--n-iter", "20", "--n-train", "500", "--rows", "50",
                       "--states", "2"], "| per_row |"),
    "ema": (["bench_ema.py", "--quick"], "| per-tensor lerp (ms) |"),
    "digits": (["bench_digits.py", "--quick", "--png", "{tmp}/digits.png"], "| depth | NFE |"),
}


def run_script(argv, cwd):
    """Run ``benchmarks/<argv[0]> argv[1:]`` in a fresh process; assert it exits cleanly."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(BENCH / argv[0]), *argv[1:]], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_smoke_run(name, tmp_path):
    argv, expected = CASES[name]
    stdout = run_script([a.format(tmp=tmp_path) for a in argv], tmp_path)
    assert expected in stdout, stdout[-3000:]


def test_quality_model_dir_reuses_the_fits(tmp_path):
    """``bench_quality.py --model-dir``: a second run loads the saved fits, same table."""
    argv = ["bench_quality.py", "--quick", "--datasets", "six_gaussians", "--no-oracle",
            "--depths", "1", "2", "--model-dir", str(tmp_path / "models")]
    runs = [run_script(argv, tmp_path) for _ in range(2)]
    assert len(list((tmp_path / "models").glob("six_gaussians_seed0_depth*.hrf"))) == 2
    assert runs[0].count(": fit ") == 2 and ": loaded " not in runs[0]
    assert runs[1].count(": loaded ") == 2 and ": fit " not in runs[1]
    tables = [stdout[stdout.index("trained:"):] for stdout in runs]
    assert tables[0] == tables[1]


def test_field_error_and_time_sampler_names(tmp_path):
    """``bench_quality.py --time-sampler --show-candidates`` names its fits by the time
    samplers and lists every split; ``bench_field_error.py`` reads them: a depth-2 model
    gets the ``t = 0`` row, finite errors, a depth-1 model does not."""
    argv = ["bench_quality.py", "--quick", "--datasets", "six_gaussians", "--no-oracle",
            "--depths", "1", "2", "--time-sampler", "u_shaped", "uniform", "--show-candidates",
            "--model-dir", str(tmp_path / "models")]
    out = run_script(argv, tmp_path)
    assert "six_gaussians seed 0 depth 2 NFE 10 validation: 1x10 " in out
    models = sorted((tmp_path / "models").glob("*.hrf"))
    assert [m.name.split("hidden128x3")[1] for m in models] == ["_tsu_shaped.hrf",
                                                                "_tsu_shaped-uniform.hrf"]
    out = run_script(["bench_field_error.py", "six_gaussians", *map(str, models),
                      "--n-points", "2000"], tmp_path)
    assert out.count("| by outer t |") == 2 and out.count("| t = 0, by inner time |") == 1
    assert "nan" not in out


def test_summarize_splits_averages_every_split_over_seeds(tmp_path):
    """``summarize_splits.py`` reads ``--all-splits`` lines: mean and sample sd over seeds."""
    log = tmp_path / "q.log"
    log.write_text(
        "  1to5 seed 0 depth 2 NFE 4 test, every split: 1x4 0.2000 +- 0.0100, 2x2 0.1000 +- 0.0010\n"
        "  1to5 seed 1 depth 2 NFE 4 test, every split: 1x4 0.4000 +- 0.0100, 2x2 0.3000 +- 0.0010\n"
        "  1to5 exact depth 2 NFE 4 test, every split: 1x4 0.0500 +- 0.0100, 2x2 0.0400 +- 0.0010\n"
        "  an unrelated line\n",
        encoding="utf-8",
    )
    out = run_script(["summarize_splits.py", str(log)], tmp_path)
    assert "1to5 depth 2 NFE 4: 1x4 0.3000 +- 0.1414 (2 seeds), 2x2 0.2000 +- 0.1414 (2 seeds)" in out
    assert "1to5 exact depth 2 NFE 4: 1x4 0.0500 (one seed), 2x2 0.0400 (one seed)" in out
