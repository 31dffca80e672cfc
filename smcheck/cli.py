"""The command line: parse options, call the core, render, choose the exit status.

Exit status: 0 ran (and with --check every check passed), 1 with --check some check failed,
2 usage or input error (one ``error:`` line on stderr, never a traceback). Nothing heavy is
imported at start-up: numpy, mpmath and rich load inside the commands.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from typer.core import TyperCommand

from . import __version__
from .exceptions import SmcheckError


class PanelCommand(TyperCommand):
    """A command whose help is plain text (click's formatter: rich is not imported for
    ``--help``, which so starts in about 0.1 s instead of 0.25 s), with the options under
    the headings of their panels (Input, Options, Common options)."""

    def format_options(self, ctx, formatter) -> None:
        sections: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            title = ("Arguments" if param.param_type_name == "argument"
                     else getattr(param, "rich_help_panel", None) or "Options")
            sections.setdefault(title, []).append(record)
        for title, records in sections.items():
            with formatter.section(title):
                formatter.write_dl(records)


app = typer.Typer(
    name="smcheck",
    help="Verify softmax, log-softmax and their derivatives against an mpmath reference.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: see PanelCommand
    context_settings={"help_option_names": ["-h", "--help"]},
)

# --- options shared by the commands (defined once) ---------------------------------------------

INPUT = "Input (exactly one source for x)"
COMMON = "Common options"

Positional = Annotated[Optional[str], typer.Argument(
    help="x as a file path, '-' for stdin, a preset name, or numbers (instead of --x...)",
    show_default=False)]
XText = Annotated[Optional[str], typer.Option(
    "--x", help="numbers separated by commas/spaces or a JSON array; ';' separates rows",
    rich_help_panel=INPUT, show_default=False)]
XFile = Annotated[Optional[str], typer.Option(
    "--x-file", help=".npy, .npz[:key], .json, .csv, .tsv, .txt, or - for stdin",
    rich_help_panel=INPUT, show_default=False)]
Random = Annotated[Optional[int], typer.Option(
    "--random", help="N random normal entries (see --rows, --seed, --scale)",
    rich_help_panel=INPUT, show_default=False)]
Rows = Annotated[int, typer.Option("--rows", help="rows of --random", rich_help_panel=INPUT)]
Seed = Annotated[int, typer.Option("--seed", help="seed of --random and of every random choice "
                                   "(v, probes, directions)", rich_help_panel=INPUT,
                                   min=0)]
Scale = Annotated[float, typer.Option("--scale", help="scale of --random",
                                      rich_help_panel=INPUT)]
PresetOpt = Annotated[Optional[str], typer.Option(
    "--preset", help="a named adversarial input (see 'smcheck presets')",
    rich_help_panel=INPUT, show_default=False)]
MaxSize = Annotated[int, typer.Option(
    "--max-size", help="refuse an input (x, v, t or z) of more than this many numbers, checked "
    "before its data is read (a .npy by its header, text by its length: 32 bytes a number); "
    "the default admits a 2000 x 4096 batch or a 10^6 vocabulary many times over",
    rich_help_panel=INPUT)]
#: --max-size's default, 10^8 numbers (800 MB in float64); the same as
#: smcheck.inputs.DEFAULT_MAX_SIZE (not imported here: that would load numpy for --help)
MAX_SIZE = 100_000_000
Impl = Annotated[str, typer.Option(
    "--impl", help="stable, naive, divfree (built in); scipy, torch, jax (imports that "
    "framework); or module.path:function, your callable: imports only that module (from the "
    "current directory or sys.path), never other code", rich_help_panel=COMMON)]
Dtype = Annotated[str, typer.Option(
    "--dtype", help="float64, float32, float16 or bfloat16", rich_help_panel=COMMON)]
Dps = Annotated[int, typer.Option("--dps", help="decimal digits of the mpmath reference",
                                  rich_help_panel=COMMON)]
Rtol = Annotated[Optional[float], typer.Option(
    "--rtol", help="relative tolerance (overrides the derived one)", rich_help_panel=COMMON,
    show_default=False)]
Atol = Annotated[Optional[float], typer.Option(
    "--atol", help="absolute tolerance (overrides the derived one)", rich_help_panel=COMMON,
    show_default=False)]
MaxUlp = Annotated[Optional[float], typer.Option(
    "--max-ulp", help="largest error in ULPs of the dtype", rich_help_panel=COMMON,
    show_default=False)]
Check = Annotated[bool, typer.Option(
    "--check", help="make the verdict the exit status: 1 if a check of the implementation "
    "fails, else 3 if the input leaves something unjudgeable, else 0", rich_help_panel=COMMON)]
Json = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout",
                                    rich_help_panel=COMMON)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="print nothing; exit status only",
                                     rich_help_panel=COMMON)]
Top = Annotated[int, typer.Option("--top", help="rows in the table of worst entries",
                                  rich_help_panel=COMMON)]
Engine = Annotated[str, typer.Option(
    "--engine", help="reference engine: auto (mpmath below 4096 reference entries; above, "
    "double-double for float64 results and the float64 tier for narrower ones), mpmath (forces "
    "the slow path, --dps digits), dd, f64 (forward with float32/16/bfloat16 only)",
    rich_help_panel=COMMON)]
Verify = Annotated[bool, typer.Option(
    "--verify-reference", help="recompute the reference with mpmath at --dps + 20 digits (at "
    "least 70) and fail if any entry differs by more than its stated precision (costs about "
    "11 us per entry)", rich_help_panel=COMMON)]
Workers = Annotated[Optional[int], typer.Option(
    "--workers", help="processes for the rows of a batch (default: every core); the results "
    "are the same for any number", rich_help_panel=COMMON, show_default=False)]
AllowFtz = Annotated[bool, typer.Option(
    "--allow-ftz", help="accept subnormal results flushed to zero (FTZ/DAZ arithmetic, as on "
    "GPUs and XLA's CPU backend); by default they fail, named as flush-to-zero",
    rich_help_panel=COMMON)]
StrictDtype = Annotated[bool, typer.Option(
    "--strict-dtype", help="fail an implementation that does not compute in --dtype (returns "
    "arrays of another dtype, or values the dtype cannot hold); by default it is a note",
    rich_help_panel=COMMON)]
Metric = Annotated[str, typer.Option(
    "--metric", help="log-softmax error metric: scaled (to each entry's natural size) or "
    "strict (componentwise relative)", rich_help_panel=COMMON)]


def _version(value: bool):
    if value:
        typer.echo(f"smcheck {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="print the version and exit")] = False):
    """Verify softmax, log-softmax and their derivatives against an mpmath reference."""


def load_x(positional, x, x_file, random, rows, seed, scale, preset, max_size=MAX_SIZE):
    """The x array from exactly one source; the positional INPUT is sorted into one of them."""
    from . import inputs, presets

    if positional is not None:
        p = positional
        if p == "-" or os.path.exists(p.split(":")[0]) or os.path.splitext(p)[1].lower() in (
                ".npy", ".npz", ".json", ".csv", ".tsv", ".txt"):
            if x_file is not None:
                raise SmcheckError(f"give exactly one source for x, got INPUT '{p}' and --x-file")
            x_file = p
        elif p in presets.PRESETS:
            if preset is not None:
                raise SmcheckError(f"give exactly one source for x, got INPUT '{p}' and --preset")
            preset = p
        else:
            if x is not None:
                raise SmcheckError(f"give exactly one source for x, got INPUT '{p}' and --x")
            x = p
    src = inputs.load_vector("x", text=x, file=x_file, random=random, rows=rows, seed=seed,
                             scale=scale, preset=preset, max_size=max_size)
    return src


class Progress:
    """A transient rich progress bar on stderr, shown only on a terminal for long work."""

    THRESHOLD = 30_000  # reference entries: about a second of mpmath work

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < self.THRESHOLD:
            return
        if self.bar is None:
            from rich.progress import Progress as RichProgress

            from .report import make_console

            self.bar = RichProgress(console=make_console(stderr=True), transient=True)
            self.task = self.bar.add_task("exact reference", total=total)
            self.bar.start()
        self.bar.advance(self.task, done)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def emit(report, *, json_out: bool, quiet: bool, check: bool, top: int) -> None:
    """Render the report as asked and leave with the right exit status."""
    from .report import make_console, render, to_json_text

    if json_out and not quiet:
        sys.stdout.write(to_json_text(report, __version__, top) + "\n")
    elif not quiet:
        render(report, make_console(), top)
    raise typer.Exit(report.exit_status(check))


@app.command(cls=PanelCommand, short_help="Check softmax or log-softmax entry by entry.")
def forward(
    input: Positional = None,
    x: XText = None, x_file: XFile = None, random: Random = None, rows: Rows = 1,
    seed: Seed = 0, scale: Scale = 1.0, preset: PresetOpt = None, max_size: MaxSize = MAX_SIZE,
    log: Annotated[bool, typer.Option("--log",
                                      help="check log-softmax instead of softmax")] = False,
    impl: Impl = "stable", dtype: Dtype = "float64", dps: Dps = 50, engine: Engine = "auto",
    rtol: Rtol = None, atol: Atol = None, max_ulp: MaxUlp = None, metric: Metric = "scaled",
    plot: Annotated[Optional[str], typer.Option(
        "--plot", help="draw each entry's error in ULPs against x_i - max(x), with the "
        "tolerance, to this image file (needs matplotlib)", show_default=False)] = None,
    workers: Workers = None, verify_reference: Verify = False,
    allow_ftz: AllowFtz = False, strict_dtype: StrictDtype = False,
    check: Check = False, json: Json = False, quiet: Quiet = False, top: Top = 10,
):
    """Check softmax (or log-softmax with --log) against the exact values, entry by entry."""
    from .run import run_forward

    src = load_x(input, x, x_file, random, rows, seed, scale, preset, max_size)
    report = _run(run_forward, src, not quiet, x=src.array, workers=workers,
                  keep_arrays=plot is not None, impl=impl, dtype=dtype, dps=dps, log=log,
                  metric=metric, rtol=rtol, atol=atol, max_ulp=max_ulp, top=top, engine=engine,
                  verify=verify_reference, allow_ftz=allow_ftz, strict_dtype=strict_dtype)
    if plot:
        from .plot import plot_forward

        plot_forward(report, plot)
    emit(report, json_out=json, quiet=quiet, check=check, top=top)


FdOpt = Annotated[str, typer.Option(
    "--fd", help="finite differences: central, richardson, complex, or auto (the most accurate "
    "available)")]
VText = Annotated[Optional[str], typer.Option("--v", help="the vector v of v J (default: random "
                                              "from --seed)", show_default=False)]
VFile = Annotated[Optional[str], typer.Option("--v-file", help="v from a file",
                                              show_default=False)]
LogOpt = Annotated[bool, typer.Option("--log", help="log-softmax instead of softmax")]


def load_companion(name: str, text, file, required: bool = False, max_size: int = MAX_SIZE):
    from . import inputs

    src = inputs.load_vector(name, text=text, file=file, required=required, max_size=max_size)
    return None if src is None else src.array


def same_shape(name: str, arr, ref_name: str, ref) -> None:
    """Companion ``arr`` (v, t or z) fits ``ref`` (x, or z): the same rows x n, or one row of n
    for every row. Checked here, on the whole input: the core sees a batch in chunks of rows,
    and would name a chunk's shape."""
    import numpy as np

    if arr is None or ref is None:
        return
    shape, ref_shape = tuple(np.shape(arr)), tuple(np.shape(ref))
    rows_n = ref_shape if len(ref_shape) == 2 else (1, *ref_shape[-1:])
    if len(shape) == 1 and shape[0] == rows_n[1]:
        return
    if (shape if len(shape) == 2 else (1, *shape)) != rows_n:
        raise SmcheckError(f"{name} has shape {shape} but {ref_name} has shape {ref_shape}")


def _flag(name: str, text, file) -> str:
    """How the user gave companion ``name``: --v or --v-file."""
    return f"--{name}-file" if file is not None and text is None else f"--{name}"


def keep_freed_memory() -> None:
    """In the smcheck process (not when smcheck is imported as a library): let glibc serve
    large temporaries from the heap and keep freed memory for reuse, instead of mapping fresh
    pages for each array and returning them at once; the page faults of that churn cost a
    quarter of a 10^6-entry forward run (benchmarks/). Peak memory is unchanged: freed memory
    is reused, and returned when the process ends. No effect outside glibc."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(None)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
    except (OSError, AttributeError):  # pragma: no cover - no mallopt here
        pass


def _run(fn, src, progress_enabled, *, x, workers=None, companions=None, keep_arrays=False,
         **kw):
    """fn over the rows of x, in chunks on ``workers`` processes (see smcheck.parallel)."""
    from .parallel import run_rows

    keep_freed_memory()
    progress = Progress(enabled=progress_enabled)
    try:
        report = run_rows(fn, x, workers=workers, companions=companions or {},
                          progress=progress, keep_arrays=keep_arrays, **kw)
    finally:
        progress.close()
    if src is not None:
        report.options["input"] = src.description
    return report


@app.command(cls=PanelCommand, short_help="Check the Jacobian diag(s) - s s^T (or I - 1 s^T).")
def jacobian(
    input: Positional = None,
    x: XText = None, x_file: XFile = None, random: Random = None, rows: Rows = 1,
    seed: Seed = 0, scale: Scale = 1.0, preset: PresetOpt = None, max_size: MaxSize = MAX_SIZE,
    log: LogOpt = False, fd: FdOpt = "auto",
    max_dense: Annotated[int, typer.Option(
        "--max-dense", help="largest n for which J is formed; beyond it, v^T J u on random "
        "probe pairs")] = 2048,
    metric: Annotated[str, typer.Option(
        "--metric", help="scaled (each entry against its natural size) or strict "
        "(componentwise relative)", rich_help_panel=COMMON)] = "scaled",
    impl: Impl = "stable", dtype: Dtype = "float64", dps: Dps = 50, engine: Engine = "auto",
    rtol: Rtol = None, atol: Atol = None, max_ulp: MaxUlp = None,
    workers: Workers = None, verify_reference: Verify = False,
    allow_ftz: AllowFtz = False, strict_dtype: StrictDtype = False,
    check: Check = False, json: Json = False, quiet: Quiet = False, top: Top = 10,
):
    """Check the Jacobian J = diag(s) - s s^T (or I - 1 s^T with --log) entry by entry."""
    from .run import run_jacobian

    src = load_x(input, x, x_file, random, rows, seed, scale, preset, max_size)
    report = _run(run_jacobian, src, not quiet, x=src.array, workers=workers, impl=impl,
                  dtype=dtype, dps=dps,
                  log=log, metric=metric, fd=fd, max_dense=max_dense, seed=seed, rtol=rtol,
                  atol=atol, max_ulp=max_ulp, top=top, engine=engine, verify=verify_reference,
                  allow_ftz=allow_ftz, strict_dtype=strict_dtype)
    emit(report, json_out=json, quiet=quiet, check=check, top=top)


@app.command(cls=PanelCommand, short_help="Check the VJP z = s * (v - <v, s>), computed in O(n).")
def vjp(
    input: Positional = None,
    x: XText = None, x_file: XFile = None, random: Random = None, rows: Rows = 1,
    seed: Seed = 0, scale: Scale = 1.0, preset: PresetOpt = None, max_size: MaxSize = MAX_SIZE,
    v: VText = None, v_file: VFile = None, fd: FdOpt = "auto",
    impl: Impl = "stable", dtype: Dtype = "float64", dps: Dps = 50, engine: Engine = "auto",
    rtol: Rtol = None, atol: Atol = None, max_ulp: MaxUlp = None,
    workers: Workers = None, verify_reference: Verify = False,
    allow_ftz: AllowFtz = False, strict_dtype: StrictDtype = False,
    check: Check = False, json: Json = False, quiet: Quiet = False, top: Top = 10,
):
    """Check the vector-Jacobian product z = v J = s * (v - <v, s>), computed in O(n)."""
    from .run import run_vjp

    src = load_x(input, x, x_file, random, rows, seed, scale, preset, max_size)
    varr = load_companion("v", v, v_file, max_size=max_size)
    same_shape(_flag("v", v, v_file), varr, "x", src.array)
    report = _run(run_vjp, src, not quiet, x=src.array, workers=workers,
                  companions={"v": varr}, impl=impl, dtype=dtype, dps=dps,
                  fd=fd, seed=seed, rtol=rtol, atol=atol, max_ulp=max_ulp, top=top,
                  engine=engine, verify=verify_reference, allow_ftz=allow_ftz,
                  strict_dtype=strict_dtype)
    emit(report, json_out=json, quiet=quiet, check=check, top=top)


@app.command(cls=PanelCommand,
             short_help="Check the loss gradient -t / z and the z_i = 0 condition.")
def loss(
    input: Positional = None,
    x: XText = None, x_file: XFile = None, random: Random = None, rows: Rows = 1,
    seed: Seed = 0, scale: Scale = 1.0, preset: PresetOpt = None, max_size: MaxSize = MAX_SIZE,
    t: Annotated[Optional[str], typer.Option("--t", help="the targets t",
                                             show_default=False)] = None,
    t_file: Annotated[Optional[str], typer.Option("--t-file", help="t from a file",
                                                  show_default=False)] = None,
    v: VText = None, v_file: VFile = None,
    z: Annotated[Optional[str], typer.Option("--z", help="z given directly",
                                             show_default=False)] = None,
    z_file: Annotated[Optional[str], typer.Option("--z-file", help="z from a file",
                                                  show_default=False)] = None,
    fd: FdOpt = "auto",
    impl: Impl = "stable", dtype: Dtype = "float64", dps: Dps = 50, engine: Engine = "auto",
    rtol: Rtol = None, atol: Atol = None, max_ulp: MaxUlp = None,
    workers: Workers = None, verify_reference: Verify = False,
    allow_ftz: AllowFtz = False, strict_dtype: StrictDtype = False,
    check: Check = False, json: Json = False, quiet: Quiet = False, top: Top = 10,
):
    """Check the loss gradient -t / z of l(z, t) = -sum t_i log z_i, and the z_i = 0 condition.

    z is the VJP v J(x) with --v, given with --z, or softmax(x) otherwise."""
    import numpy as np

    from .run import run_loss

    tarr = load_companion("t", t, t_file, required=True, max_size=max_size)
    varr = load_companion("v", v, v_file, max_size=max_size)
    zarr = load_companion("z", z, z_file, max_size=max_size)
    given = any(a is not None for a in (input, x, x_file, random, preset))
    src = load_x(input, x, x_file, random, rows, seed, scale, preset, max_size) if (
        given or zarr is None) else None
    # z alone: z, not an x the user never gave, fixes the shape
    ref, ref_name = (zarr, _flag("z", z, z_file)) if src is None else (src.array, "x")
    same_shape(_flag("t", t, t_file), tarr, ref_name, ref)
    if src is not None:
        same_shape(_flag("v", v, v_file), varr, "x", src.array)
        same_shape(_flag("z", z, z_file), zarr, "x", src.array)
    report = _run(run_loss, src, not quiet,
                  x=np.zeros(np.shape(zarr)) if src is None else src.array, workers=workers,
                  companions={"t": tarr, "v": varr, "z": zarr}, impl=impl, dtype=dtype,
                  dps=dps, fd=fd, seed=seed, rtol=rtol, atol=atol, max_ulp=max_ulp, top=top,
                  engine=engine, verify=verify_reference, allow_ftz=allow_ftz,
                  strict_dtype=strict_dtype)
    emit(report, json_out=json, quiet=quiet, check=check, top=top)


@app.command(cls=PanelCommand, short_help="Verify every identity of the derivation in mpmath.")
def claims(
    input: Positional = None,
    x: XText = None, x_file: XFile = None, random: Random = None, rows: Rows = 1,
    seed: Seed = 0, scale: Scale = 1.0, preset: PresetOpt = None, max_size: MaxSize = MAX_SIZE,
    claim: Annotated[Optional[list[str]], typer.Option(
        "--claim", help="run only this claim (repeatable)", show_default=False)] = None,
    v: VText = None, v_file: VFile = None,
    t: Annotated[Optional[str], typer.Option("--t", help="targets for the loss claim",
                                             show_default=False)] = None,
    dps: Dps = 50, check: Check = False, json: Json = False, quiet: Quiet = False,
):
    """Verify every identity of the derivation in mpmath at --dps digits (random x by default)."""
    from .claims import run_claims

    given = any(a is not None for a in (input, x, x_file, random, preset))
    if given:
        src = load_x(input, x, x_file, random, rows, seed, scale, preset, max_size)
        arr = src.array
    else:
        from . import inputs

        src = None
        arr = inputs.random_input(5, 1, seed, 1.0)
    varr = load_companion("v", v, v_file, max_size=max_size)
    tarr = load_companion("t", t, None, max_size=max_size)
    same_shape(_flag("v", v, v_file), varr, "x", arr)
    same_shape("--t", tarr, "x", arr)
    report = run_claims(arr, claim=claim or None, dps=dps, v=varr, t=tarr, seed=seed)
    report.options["input"] = src.description if src else f"random n=5 seed={seed}"
    emit(report, json_out=json, quiet=quiet, check=check, top=10)


@app.command(cls=PanelCommand, short_help="Run every preset x dtype x command on one impl.")
def sweep(
    impl: Impl = "stable",
    dtype: Annotated[Optional[list[str]], typer.Option(
        "--dtype", help="float64 (default), float32, float16, bfloat16 or all (repeatable)",
        show_default=False)] = None,
    preset: Annotated[Optional[list[str]], typer.Option(
        "--preset", help="only these presets (repeatable; default: all)",
        show_default=False)] = None,
    junit: Annotated[Optional[str], typer.Option(
        "--junit", help="write JUnit XML to this path", show_default=False)] = None,
    plot: Annotated[Optional[str], typer.Option(
        "--plot", help="draw the matrix as an image (needs matplotlib)",
        show_default=False)] = None,
    dps: Dps = 50, seed: Seed = 0, engine: Engine = "auto", allow_ftz: AllowFtz = False,
    check: Check = False, json: Json = False, quiet: Quiet = False,
):
    """Run every preset x dtype x (forward, log-softmax, jacobian, vjp, loss) on one impl."""
    from .sweep import resolve_dtypes, run_sweep

    dts = resolve_dtypes(dtype or ["float64"])
    bar = SweepProgress(enabled=not quiet)
    try:
        res = run_sweep(impl, dts, preset, dps=dps, seed=seed, engine=engine, progress=bar,
                        allow_ftz=allow_ftz)
    finally:
        bar.close()
    if junit:
        from .sweep import junit_xml

        _write(junit, junit_xml(res), "--junit")
    if plot:
        from .plot import plot_sweep

        plot_sweep(res.cases, plot)
    if json and not quiet:
        from .report import dumps

        sys.stdout.write(dumps(res.to_json(__version__)) + "\n")
    elif not quiet:
        from .report import make_console, render_sweep

        render_sweep(res, make_console())
    raise typer.Exit(1 if check and not res.passed else 0)


def _write(path: str, text: str, option: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise SmcheckError(f"{option} {path}: cannot write ({exc.strerror or exc})") from None
    except ValueError:  # open() itself, on a path with a NUL byte
        raise SmcheckError(f"{option} {path!r}: not a valid file path") from None


class SweepProgress:
    """A rich progress bar on stderr (terminal only) that counts sweep cases."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.task = None

    def __call__(self, label: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeElapsedColumn)

            from .report import make_console

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                    MofNCompleteColumn(), TimeElapsedColumn(),
                                    console=make_console(stderr=True), transient=True)
            self.task = self.bar.add_task("sweep", total=None)
            self.bar.start()
        else:
            self.bar.advance(self.task, 1)
        self.bar.update(self.task, description=f"sweep: {label}")

    def close(self):
        if self.bar is not None:
            self.bar.stop()


@app.command(cls=PanelCommand, short_help="List the named adversarial inputs.")
def presets(json: Json = False):
    """List the named adversarial inputs."""
    from .presets import PRESETS

    items = []
    for p in PRESETS.values():
        arr = p.make()
        items.append({"name": p.name, "shape": list(arr.shape), "description": p.description})
    if json:
        from .report import dumps

        sys.stdout.write(dumps(items) + "\n")
        return
    from rich.table import Table

    from .report import make_console

    t = Table(header_style="bold")
    for col in ("name", "shape", "what it exercises"):
        t.add_column(col)
    for it in items:
        t.add_row(it["name"], " x ".join(map(str, it["shape"])), it["description"])
    make_console().print(t)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure becomes one ``error:`` line and exit status 2."""
    import warnings

    # overflow and underflow are what smcheck studies: numpy's warnings about them are noise
    warnings.simplefilter("ignore", RuntimeWarning)
    try:
        rv = _app_for(sys.argv[1:] if argv is None else argv)(
            args=argv, prog_name="smcheck", standalone_mode=False)
    except SmcheckError as exc:
        _fail(str(exc))
    except NoArgsIsHelpError as exc:
        sys.stdout.write(exc.format_message() + "\n")
        sys.exit(0)
    except UsageError as exc:
        msg = exc.format_message()
        _fail(msg.splitlines()[0] if msg else str(exc))
    except typer.Abort:
        _fail("aborted")
    except ClickException as exc:
        _fail(exc.format_message())
    except KeyboardInterrupt:
        _fail("interrupted")
    except MemoryError as exc:
        _fail(f"out of memory ({exc or 'MemoryError'}); try a smaller input, or a smaller "
              "--max-size to refuse such inputs before reading them")
    except Exception as exc:  # a bug of smcheck: still one line, never a traceback
        if os.environ.get("SMCHECK_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set SMCHECK_DEBUG=1 for the "
              "traceback, and please report it)")
    sys.exit(rv if isinstance(rv, int) else 0)


def _app_for(args) -> typer.Typer:
    """The app, with only the command that ``args`` names when it names one: typer turns
    every registered command's signature into click parameters before parsing (about 20 ms
    for all of them), and one command needs only its own. Usage, help and errors of that
    command are the same either way; anything else (``--help``, a misspelt command) gets
    the whole app."""
    import copy

    # the root's options (--version, --help, -h) take no value: the first other word is
    # the command
    name = next((a for a in args if not str(a).startswith("-")), None)
    chosen = [c for c in app.registered_commands
              if (c.name or c.callback.__name__.lower().replace("_", "-")) == name]
    if len(chosen) != 1:
        return app
    one = copy.copy(app)
    one.registered_commands = chosen
    return one


def entry() -> None:
    """The ``smcheck`` program (console script and ``python -m smcheck``): :func:`main`, then
    exit at once. Tearing the interpreter down (every module, every array freed one by one)
    costs about 40 ms that the operating system does for free; exit handlers still run and
    the output is flushed first. In-process callers use :func:`main`, which only raises
    SystemExit."""
    import atexit

    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (smcheck ... | head): nothing to add
            pass
    os._exit(code)


def _fail(message: str) -> None:
    message = " ".join(str(message).split())
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)
