"""The command line: parse options, call the core, render, choose the exit status.

Exit status: 0 ran (and with --check every check passed), 1 with --check some check failed,
2 usage or input error (one ``error:`` line on stderr, never a traceback). Nothing heavy is
imported at start-up: numpy, mpmath and rich load inside the commands. The options the commands
share are in :mod:`smcheck.cli_options`, the sorting of INPUT into a source in
:mod:`smcheck.sources`.
"""

import os
import sys
from typing import Annotated, Optional

import typer

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import (ClickException, NoArgsIsHelpError, NoSuchOption,
                                         UsageError)
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import ClickException, NoArgsIsHelpError, NoSuchOption, UsageError

from . import __version__
from .cli_options import (COMMON, MAX_SIZE, AllowFtz, Atol, Axis, Batched, Check, Device, Dps,
                          Dtype, Engine, FdOpt, Impl, InstallCompletion, Json, LogOpt, LossVText,
                          MaxSize, MaxUlp, Metric, NoColor, Output, PanelCommand, Positional,
                          PresetOpt, ProgressMode, Quiet, Random, Rows, Rtol, Scale, Scheduler,
                          Seed,
                          ShowCompletion, StrictDtype, SweepSeed, Tensor, TFile, Top, TText,
                          Validate, Verify, VFile, VText, Workers, XFile, XText, negative_input,
                          no_such_option, options_of)
from .exceptions import SmcheckError
from .output import Destination, show, write_file
from .process import keep_freed_memory
from .progress import Progress, SweepProgress


app = typer.Typer(
    name="smcheck",
    help="Verify softmax, log-softmax and their derivatives against an mpmath reference.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: see PanelCommand
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        typer.echo(f"smcheck {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="print the version and exit")] = False,
        install_completion: InstallCompletion = None, show_completion: ShowCompletion = None):
    """Verify softmax, log-softmax and their derivatives against an mpmath reference."""


def emit(report, *, json_out: bool, quiet: bool, check: bool, top: int, to: Destination) -> None:
    """Render the report as asked, on stdout or into the file of --output, and leave with the
    right exit status."""
    from .report import render, to_json_text

    show(to, quiet=quiet, draw=lambda console: render(report, console, top),
         text=(lambda: to_json_text(report, __version__, top) + "\n") if json_out else None)
    raise typer.Exit(report.exit_status(check or quiet))  # --quiet's verdict is its status


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
    workers: Workers = None, scheduler: Scheduler = "local", verify_reference: Verify = False,
    allow_ftz: AllowFtz = False, strict_dtype: StrictDtype = False,
    batched: Batched = False, tensor: Tensor = "numpy", axis: Axis = -1, device: Device = "cpu",
    check: Check = False, json: Json = False, quiet: Quiet = False, top: Top = 10,
    output: Output = None, no_color: NoColor = False, progress: ProgressMode = "auto",
):
    """Check softmax (or log-softmax with --log) against the exact values, entry by entry."""
    from .sources import load_x

    src = load_x(input, x, x_file, random, rows, seed, scale, preset, max_size)
    report = _run("forward", src, (progress, quiet, no_color), x=src.array, workers=workers,
                  keep_arrays=plot is not None, **options_of(locals(), drop=("seed",)))
    if plot:
        from .plot import plot_forward

        plot_forward(report, plot)
    emit(report, json_out=json, quiet=quiet, check=check, top=top, to=Destination(output, no_color))


def _run(command, src, shown: tuple, *, x, workers=None, companions=None,
         keep_arrays=False, **kw):
    """``command`` over the rows of x, in chunks on ``workers`` processes (see
    smcheck.run.check_rows), its progress shown as ``shown`` (--progress, --quiet,
    --no-color) asks; ``kw`` are the options (smcheck.options.Options)."""
    from .impls import get_implementation
    from .options import Options
    from .run import check_rows

    options = Options(**kw)
    if options.device != "cpu":  # usable (else one error line, before the run); one process
        if options.scheduler != "local":
            raise SmcheckError(f"--device {options.device} runs in this process: use "
                               f"--scheduler local, not {options.scheduler}")
        get_implementation(options.impl).for_options(options)
        workers = 1
    keep_freed_memory()
    progress = Progress(*shown, command=command)
    progress.entries = int(x.size)  # the lines count the input's entries
    with progress:  # closes the bar, or writes the last line
        report = check_rows(command, x, options, workers=workers,
                            companions=companions or {}, progress=progress,
                            keep_arrays=keep_arrays)
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
    workers: Workers = None, scheduler: Scheduler = "local", verify_reference: Verify = False,
    allow_ftz: AllowFtz = False, strict_dtype: StrictDtype = False,
    batched: Batched = False, tensor: Tensor = "numpy", axis: Axis = -1, device: Device = "cpu",
    check: Check = False, json: Json = False, quiet: Quiet = False, top: Top = 10,
    output: Output = None, no_color: NoColor = False, progress: ProgressMode = "auto",
):
    """Check the Jacobian J = diag(s) - s s^T (or I - 1 s^T with --log) entry by entry."""
    from .sources import load_x

    src = load_x(input, x, x_file, random, rows, seed, scale, preset, max_size)
    report = _run("jacobian", src, (progress, quiet, no_color), x=src.array, workers=workers,
                  **options_of(locals()))
    emit(report, json_out=json, quiet=quiet, check=check, top=top, to=Destination(output, no_color))


@app.command(cls=PanelCommand, short_help="Check the VJP z = s * (v - <v, s>), computed in O(n).")
def vjp(
    input: Positional = None,
    x: XText = None, x_file: XFile = None, random: Random = None, rows: Rows = 1,
    seed: Seed = 0, scale: Scale = 1.0, preset: PresetOpt = None, max_size: MaxSize = MAX_SIZE,
    v: VText = None, v_file: VFile = None, fd: FdOpt = "auto",
    impl: Impl = "stable", dtype: Dtype = "float64", dps: Dps = 50, engine: Engine = "auto",
    rtol: Rtol = None, atol: Atol = None, max_ulp: MaxUlp = None,
    workers: Workers = None, scheduler: Scheduler = "local", verify_reference: Verify = False,
    allow_ftz: AllowFtz = False, strict_dtype: StrictDtype = False,
    batched: Batched = False, tensor: Tensor = "numpy", axis: Axis = -1, device: Device = "cpu",
    check: Check = False, json: Json = False, quiet: Quiet = False, top: Top = 10,
    output: Output = None, no_color: NoColor = False, progress: ProgressMode = "auto",
):
    """Check the vector-Jacobian product z = v J = s * (v - <v, s>), computed in O(n)."""
    from .sources import flag_name, load_companion, load_x, same_shape

    src = load_x(input, x, x_file, random, rows, seed, scale, preset, max_size)
    varr = load_companion("v", v, v_file, max_size=max_size)
    same_shape(flag_name("v", v, v_file), varr, "x", src.array)
    report = _run("vjp", src, (progress, quiet, no_color), x=src.array, workers=workers,
                  companions={"v": varr}, **options_of(locals()))
    emit(report, json_out=json, quiet=quiet, check=check, top=top, to=Destination(output, no_color))


@app.command(cls=PanelCommand,
             short_help="Check the loss gradient -t / z and the z_i = 0 condition.")
def loss(
    input: Positional = None,
    x: XText = None, x_file: XFile = None, random: Random = None, rows: Rows = 1,
    seed: Seed = 0, scale: Scale = 1.0, preset: PresetOpt = None, max_size: MaxSize = MAX_SIZE,
    t: TText = None, t_file: TFile = None, v: LossVText = None, v_file: VFile = None,
    z: Annotated[Optional[str], typer.Option("--z", help="z given directly",
                                             show_default=False)] = None,
    z_file: Annotated[Optional[str], typer.Option("--z-file", help="z from a file",
                                                  show_default=False)] = None,
    fd: FdOpt = "auto",
    impl: Impl = "stable", dtype: Dtype = "float64", dps: Dps = 50, engine: Engine = "auto",
    rtol: Rtol = None, atol: Atol = None, max_ulp: MaxUlp = None,
    workers: Workers = None, scheduler: Scheduler = "local", verify_reference: Verify = False,
    allow_ftz: AllowFtz = False, strict_dtype: StrictDtype = False,
    batched: Batched = False, tensor: Tensor = "numpy", axis: Axis = -1, device: Device = "cpu",
    check: Check = False, json: Json = False, quiet: Quiet = False, top: Top = 10,
    output: Output = None, no_color: NoColor = False, progress: ProgressMode = "auto",
):
    """Check the loss gradient -t / z of l(z, t) = -sum t_i log z_i, and the z_i = 0 condition.

    z is the VJP v J(x) with --v, given with --z, or softmax(x) otherwise."""
    import numpy as np

    from .sources import flag_name, load_companion, load_x, same_shape

    tarr = load_companion("t", t, t_file, required=True, max_size=max_size)
    varr = load_companion("v", v, v_file, max_size=max_size)
    zarr = load_companion("z", z, z_file, max_size=max_size)
    given = any(a is not None for a in (input, x, x_file, random, preset))
    if given and zarr is not None:
        raise SmcheckError(f"give x (z = softmax(x), or v J(x) with --v) or "
                           f"{flag_name('z', z, z_file)} (z given), not both: with "
                           f"{flag_name('z', z, z_file)} x is not used")
    src = load_x(input, x, x_file, random, rows, seed, scale, preset, max_size) if (
        given or zarr is None) else None
    # z alone: z, not an x the user never gave, fixes the shape
    ref, ref_name = (zarr, flag_name("z", z, z_file)) if src is None else (src.array, "x")
    same_shape(flag_name("t", t, t_file), tarr, ref_name, ref)
    if src is not None:
        same_shape(flag_name("v", v, v_file), varr, "x", src.array)
        same_shape(flag_name("z", z, z_file), zarr, "x", src.array)
    report = _run("loss", src, (progress, quiet, no_color),
                  # z alone: x is zeros of its shape, a read-only view (no memory for a store)
                  x=np.broadcast_to(0.0, np.shape(zarr)) if src is None else src.array,
                  workers=workers,
                  companions={"t": tarr, "v": varr, "z": zarr}, **options_of(locals()))
    emit(report, json_out=json, quiet=quiet, check=check, top=top, to=Destination(output, no_color))


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
    t_file: TFile = None, dps: Dps = 50, check: Check = False, json: Json = False,
    quiet: Quiet = False, output: Output = None, no_color: NoColor = False,
):
    """Verify every identity of the derivation in mpmath at --dps digits (random x by default)."""
    from .claims import run_claims
    from .sources import flag_name, load_companion, load_x, same_shape

    given = any(a is not None for a in (input, x, x_file, random, preset))
    if given:
        src = load_x(input, x, x_file, random, rows, seed, scale, preset, max_size)
        arr = src.array
    else:
        from . import inputs

        src = None
        arr = inputs.random_input(5, 1, seed, 1.0)
    varr = load_companion("v", v, v_file, max_size=max_size)
    tarr = load_companion("t", t, t_file, max_size=max_size)
    same_shape(flag_name("v", v, v_file), varr, "x", arr)
    same_shape(flag_name("t", t, t_file), tarr, "x", arr)
    report = run_claims(arr, claim=claim or None, dps=dps, v=varr, t=tarr, seed=seed)
    report.options["input"] = src.description if src else f"random n=5 seed={seed}"
    emit(report, json_out=json, quiet=quiet, check=check, top=10, to=Destination(output, no_color))


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
    dps: Dps = 50, seed: SweepSeed = 0, engine: Engine = "auto", allow_ftz: AllowFtz = False,
    check: Check = False, json: Json = False, quiet: Quiet = False, output: Output = None,
    no_color: NoColor = False, device: Device = "cpu", progress: ProgressMode = "auto",
):
    """Run every preset x dtype x (forward, log-softmax, jacobian, vjp, loss) on one impl."""
    from .sweep import resolve_dtypes, run_sweep

    dts = resolve_dtypes(dtype or ["float64"])
    with SweepProgress(progress, quiet, no_color) as bar:
        res = run_sweep(impl, dts, preset, dps=dps, seed=seed, engine=engine, progress=bar,
                        allow_ftz=allow_ftz, device=device)
    if junit:
        from .sweep import junit_xml

        write_file(junit, junit_xml(res), "--junit")
    if plot:
        from .plot import plot_sweep

        plot_sweep(res.cases, plot)
    from .report import dumps, render_sweep

    show(Destination(output, no_color), quiet=quiet,
         draw=lambda console: render_sweep(res, console),
         text=(lambda: dumps(res.to_json(__version__)) + "\n") if json else None)
    raise typer.Exit(1 if (check or quiet) and not res.passed else 0)


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


@app.command(cls=PanelCommand, short_help="Print the JSON Schema of --json, or validate one.")
def schema(validate: Validate = None):
    """Print the JSON Schema that every command's --json document follows (or validate one)."""
    from .schema import command

    raise typer.Exit(command(validate))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure becomes one ``error:`` line and exit status 2."""
    import warnings

    # overflow and underflow are what smcheck studies: numpy's warnings about them are noise
    warnings.simplefilter("ignore", RuntimeWarning)
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        one = _app_for(args)
        rv = one(args=negative_input(args, one), prog_name="smcheck", standalone_mode=False)
    except SmcheckError as exc:
        _fail(str(exc))
    except NoArgsIsHelpError as exc:
        sys.stdout.write(exc.format_message() + "\n")
        sys.exit(0)
    except NoSuchOption as exc:
        _fail(no_such_option(exc))
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
