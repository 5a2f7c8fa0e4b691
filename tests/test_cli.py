"""The command line of the README's first command: ``hrflow demo`` / ``python -m hrflow demo``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from hrflow import HRFEstimator
from hrflow.cli import build_parser, main, run_demo

TINY = ["--n-iter", "30", "--n-train", "400", "--n-test", "200", "--batch-size", "64", "--quiet",
        "--device", "cpu"]


@pytest.fixture(autouse=True)
def _keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_demo_prints_quality_and_density(capsys):
    assert main(["demo", "--dataset", "1to2", "--depth", "2", *TINY]) == 0
    out = capsys.readouterr().out
    assert "hrflow demo: dataset=1to2" in out
    assert "W1(samples, held-out)" in out  # 1-D: exact Wasserstein-1
    assert "held-out log-likelihood" in out and "bits/dim" in out
    assert "true density of these points" in out  # the mixture oracle


def test_run_demo_returns_the_printed_figures():
    args = build_parser().parse_args(["demo", "--dataset", "six_gaussians", "--depth", "1", *TINY,
                                      "--no-density", "--threads", "1"])
    out = run_demo(args)
    assert set(out) == {"quality", "quality_floor"}
    assert np.isfinite(out["quality"]) and out["quality"] > out["quality_floor"] > 0
    assert torch.get_num_threads() == 1


def test_demo_saves_a_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "demo.png"
    assert main(["demo", "--dataset", "moons", "--depth", "2", *TINY, "--no-density",
                 "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"saved {path}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--depth", "0"], "depth"),
    (["--threads", "0"], "threads"),
    (["--steps", "3"], "steps"),  # depth 2 needs two step counts
])
def test_demo_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert main(["demo", "--dataset", "1to2", *TINY, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hrflow: error:") and message in err


def test_demo_with_zero_iterations_reports_no_final_loss(capsys):
    argv = ["demo", "--dataset", "1to2", "--depth", "1", *TINY, "--n-iter", "0", "--no-density"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice"
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "final loss none" in out and "nan" not in out


@pytest.mark.parametrize("argv, flag", [
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32 - 1)], "--seed"),  # the samples use seed + 1
    (["--n-test", "0"], "--n-test"),
    (["--n-train", "1"], "--n-train"),  # the estimator needs two points
    (["--n-iter", "-1"], "--n-iter"),
    (["--batch-size", "0"], "--batch-size"),
    (["--plot", "/nonexistent/dir/x.png"], "--plot"),
], ids=["negative_seed", "seed_too_large", "n_test", "n_train", "n_iter", "batch_size", "plot"])
def test_bad_flags_are_parser_errors_naming_the_flag(argv, flag, capsys, monkeypatch):
    monkeypatch.setattr("hrflow.HRFEstimator.fit", lambda *a, **k: pytest.fail("fit was run"))
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--dataset", "1to2", *TINY, *argv])
    assert exc.value.code == 2
    assert f"argument {flag}:" in capsys.readouterr().err


def test_plot_into_a_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--plot", str(tmp_path)])
    assert "argument --plot:" in capsys.readouterr().err


def test_smallest_accepted_sizes_run():
    args = build_parser().parse_args(["demo", "--dataset", "six_gaussians", "--depth", "2", *TINY,
                                      "--n-train", "2", "--n-test", "1", "--seed", str(2**32 - 2),
                                      "--threads", "1"])
    out = run_demo(args)
    assert np.isfinite(out["quality"]) and np.isfinite(out["loglik"])


def test_demo_scores_the_held_out_set_with_independent_draws_per_point(monkeypatch):
    calls = []
    original = HRFEstimator.log_density

    def spy(self, X, **kw):
        calls.append(kw)
        return original(self, X, **kw)

    monkeypatch.setattr(HRFEstimator, "log_density", spy)
    args = build_parser().parse_args(["demo", "--dataset", "1to2", "--depth", "2", *TINY,
                                      "--threads", "1"])
    out = run_demo(args)
    assert [kw.get("draws") for kw in calls] == ["per_row"]
    assert np.isfinite(out["loglik"])


def test_unknown_dataset_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--dataset", "mnist"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "hrflow"],
    [shutil.which("hrflow")],
])
def test_entry_points_run(command):
    if command[0] is None:
        pytest.skip("the hrflow console script is not installed (pip install -e .)")
    res = subprocess.run([*command, "demo", "--dataset", "1to2", "--depth", "1", *TINY,
                          "--no-density", "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "W1(samples, held-out)" in res.stdout


def test_help_shows_the_defaults_and_no_markup(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "(default: 3000)" in out and "(default: six_gaussians)" in out
    assert "(default: None)" not in out and "(default: False)" not in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_demo_moons_transports_from_the_eight_gaussians(monkeypatch):
    from hrflow.datasets import eight_gaussians_source

    seen = []

    def fake_fit(self, X, y=None):
        seen.append(self.source)
        raise RuntimeError("stop")

    monkeypatch.setattr(HRFEstimator, "fit", fake_fit)
    args = build_parser().parse_args(["demo", "--dataset", "moons", "--n-iter", "0", "--n-train",
                                      "4", "--n-test", "2", "--quiet", "--no-density"])
    with pytest.raises(RuntimeError, match="stop"):
        run_demo(args)
    assert type(seen[0]) is type(eight_gaussians_source())

