"""smcheck.plot: forward and sweep pictures from real reports, checked as PNG files and through
the figures' own texts; the error cases; and the install hint without matplotlib."""

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import matplotlib.image  # noqa: E402

from smcheck.exceptions import SmcheckError  # noqa: E402
from smcheck.plot import (  # noqa: E402
    _forward_figure,
    _sweep_figure,
    plot_forward,
    plot_sweep,
)
from smcheck.run import run_forward  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    """The pixels of a PNG written by the plot functions, after checking it is one."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[0] > 200 and img.shape[1] > 300
    return img


def red_pixels(img) -> int:
    """Pixels in the failing colour (#d62728 and the failing cell colour, roughly)."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return int(np.sum((r > 0.75) & (g < 0.55) & (b < 0.55)))


def legend_texts(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


# --- forward -----------------------------------------------------------------------------------

FORWARD_CASES = {
    "naive_overflow": ([1000.0, 999.0, 990.0], {"impl": "naive"}),
    "stable_random": (np.random.default_rng(1).standard_normal(32) * 3, {}),
    "masked_batch": ([[1.0, 2.0, -np.inf, 0.0], [3.0, 1.0, 0.0, 0.5]], {}),
    "bfloat16": (np.random.default_rng(2).standard_normal(24) * 4, {"dtype": "bfloat16"}),
    "log_naive": ([1000.0, 999.0, 990.0], {"impl": "naive", "log": True}),
}


@pytest.mark.parametrize("name", list(FORWARD_CASES))
def test_plot_forward_writes_a_png(name, tmp_path):
    x, kw = FORWARD_CASES[name]
    report = run_forward(x, **kw)
    out = tmp_path / f"{name}.png"
    assert plot_forward(report, str(out)) == str(out)
    read_png(out)


def test_passing_and_failing_reports_draw_different_pictures(tmp_path):
    x = [1000.0, 999.0, 990.0]
    good, bad = run_forward(x, impl="stable"), run_forward(x, impl="naive")
    assert good.passed and not bad.passed
    a = read_png(plot_forward(good, str(tmp_path / "good.png")))
    b = read_png(plot_forward(bad, str(tmp_path / "bad.png")))
    assert a.shape != b.shape or not np.array_equal(a, b)
    # red marks failures (points, markers, the FAILED title); a passing picture has only the
    # legend's "failing: 0 of 3" dot
    assert red_pixels(b) > 10 * max(red_pixels(a), 1)


def test_forward_figure_says_what_it_shows():
    fig = _forward_figure(run_forward([1000.0, 999.0, 990.0], impl="naive", log=True))
    ax = fig.axes[0]
    assert ax.get_title() == "forward naive float64 log-softmax — FAILED"
    assert ax.get_xlabel() == "x_i − max(x)"
    assert "ULPs of float64" in ax.get_ylabel() and ax.get_yscale() == "log"
    texts = legend_texts(fig)
    assert "infinite error (nan/inf result): 3" in texts
    assert "failing: 3 of 3" in texts

    fig = _forward_figure(run_forward(np.linspace(-3, 0, 9)))
    assert fig.axes[0].get_title() == "forward stable float64 — PASSED"
    assert "failing: 0 of 9" in legend_texts(fig)


def test_masked_entries_are_left_out_and_counted():
    report = run_forward([[1.0, 2.0, -np.inf, 0.0], [3.0, 1.0, 0.0, 0.5]])
    fig = _forward_figure(report)
    ax = fig.axes[0]
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections if len(c.get_offsets())])
    assert xs.size == 7 and np.all(np.isfinite(xs))
    texts = legend_texts(fig)
    assert "1 masked (x_i = -inf) not shown" in texts
    assert any(t.startswith("row 0") for t in texts) and any(t.startswith("row 1") for t in texts)


def test_zero_errors_sit_on_the_floor_with_a_note():
    # softmax([0, 0]) = [0.5, 0.5] exactly: both errors are 0 ULP
    fig = _forward_figure(run_forward([0.0, 0.0]))
    ys = np.concatenate([c.get_offsets()[:, 1] for c in fig.axes[0].collections
                         if len(c.get_offsets())])
    assert np.all(ys == 1e-3)
    assert "2 below 0.001 ULP (2 of them 0) drawn at 0.001" in legend_texts(fig)


def test_many_rows_share_one_colour(tmp_path):
    x = np.random.default_rng(3).standard_normal((10, 12)) * 4
    report = run_forward(x, impl="naive", dtype="float16")
    texts = legend_texts(_forward_figure(report))
    assert "passing entries (10 rows)" in texts and not any(t.startswith("row ") for t in texts)
    read_png(plot_forward(report, str(tmp_path / "many.png")))


def test_no_extension_means_png(tmp_path):
    out = plot_forward(run_forward([1.0, 2.0]), str(tmp_path / "plain"))
    assert out == str(tmp_path / "plain.png")
    read_png(out)


def test_other_formats_follow_the_extension(tmp_path):
    out = plot_forward(run_forward([1.0, 2.0]), str(tmp_path / "p.svg"))
    assert open(out, encoding="utf-8").read(200).lstrip().startswith("<?xml")


def test_unknown_extension_is_an_error(tmp_path):
    with pytest.raises(SmcheckError, match=r"unknown image format '\.xyz'.*\.png"):
        plot_forward(run_forward([1.0, 2.0]), str(tmp_path / "p.xyz"))
    with pytest.raises(SmcheckError, match=r"unknown image format '\.xyz'"):
        plot_sweep(SWEEP, str(tmp_path / "s.xyz"))
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path_is_an_error(tmp_path):
    with pytest.raises(SmcheckError, match="cannot write a plot"):
        plot_forward(run_forward([1.0, 2.0]), str(tmp_path / "no" / "such" / "dir.png"))


def test_empty_report_is_an_error(tmp_path):
    report = run_forward([np.nan, 1.0])
    assert report.arrays == {}
    with pytest.raises(SmcheckError, match="nothing to plot: no row has a defined softmax"):
        plot_forward(report, str(tmp_path / "empty.png"))
    assert not (tmp_path / "empty.png").exists()


# --- sweep -------------------------------------------------------------------------------------


def sweep_cases(fail_overflow: bool):
    cases = []
    for i, preset in enumerate(["benign", "overflow", "masked"]):
        for dtype in ["float64", "float32", "bfloat16"]:
            for command in ["forward", "jacobian"]:
                bad = fail_overflow and preset == "overflow" and command == "forward" \
                    and dtype != "float64"
                cases.append({"preset": preset, "dtype": dtype, "command": command,
                              "impl": "naive", "passed": not bad,
                              "max_ulp": "inf" if bad else 0.25 * (i + 1),
                              "scaled": None if bad else 0.01})
    return cases


SWEEP = sweep_cases(True)


def test_plot_sweep_writes_a_png_and_verdicts_change_it(tmp_path):
    bad = read_png(plot_sweep(SWEEP, str(tmp_path / "bad.png")))
    good = read_png(plot_sweep(sweep_cases(False), str(tmp_path / "good.png")))
    assert bad.shape != good.shape or not np.array_equal(bad, good)
    assert red_pixels(bad) > 10 * max(red_pixels(good), 1)  # good: the legend's patch only


def test_sweep_figure_layout_and_cells():
    # without "scaled" values the cells show the worst ULP (a sweep's table shows "scaled")
    cases = [{k: v for k, v in c.items() if k != "scaled"} for c in SWEEP] + [
        {"preset": "tiny", "dtype": "float64", "command": "forward", "passed": True,
         "max_ulp": None, "scaled": None}]
    fig = _sweep_figure(cases)
    ax = fig.axes[0]
    assert ax.get_title() == "smcheck sweep"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["benign", "overflow", "masked", "tiny"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["float64", "float32", "bfloat16"]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in ax.texts}
    assert cells[(0, 0)] == "✓ 0.25"  # the worst of the two commands
    assert cells[(1, 0)] == "✓ 0.5"
    assert cells[(1, 1)] == "✗ inf\nforward"  # which command failed, under the worst ULP
    assert cells[(3, 0)] == "✓ -"  # no max_ulp
    assert (3, 1) not in cells  # not run: grey, no text
    assert "not run" in legend_texts(fig)


def test_sweep_compact_ulp_formats():
    cases = [{"preset": "p", "dtype": dt, "command": "forward", "passed": True, "max_ulp": v,
              "scaled": None} for dt, v in [("a", 123456.0), ("b", 1e-5), ("c", "nan"),
                                            ("d", 0.0), ("e", 3.14159)]]
    texts = sorted(t.get_text() for t in _sweep_figure(cases).axes[0].texts)
    assert texts == ["✓ 0", "✓ 1e-5", "✓ 1e5", "✓ 3.14", "✓ nan"]


def test_sweep_errors():
    with pytest.raises(SmcheckError, match="nothing to plot"):
        _sweep_figure([])
    with pytest.raises(SmcheckError, match="lacks passed"):
        _sweep_figure([{"preset": "p", "dtype": "float64", "command": "forward"}])


# --- without matplotlib ------------------------------------------------------------------------


def test_missing_matplotlib_gives_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    report = run_forward([1.0, 2.0])
    hint = r'matplotlib is not installed \(pip install "smcheck\[plot\]"\)'
    with pytest.raises(SmcheckError, match=hint):
        plot_forward(report, str(tmp_path / "f.png"))
    with pytest.raises(SmcheckError, match=hint):
        plot_sweep(SWEEP, str(tmp_path / "s.png"))
    assert list(tmp_path.iterdir()) == []


def test_sweep_cells_prefer_the_scaled_error():
    cases = [{"preset": "p", "dtype": "float64", "command": c, "passed": True, "max_ulp": 9e15,
              "scaled": v} for c, v in (("forward", 0.25), ("vjp", 0.5))]
    texts = [t.get_text() for t in _sweep_figure(cases).axes[0].texts]
    assert texts == ["✓ 0.5"]
