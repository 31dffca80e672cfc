"""The options the commands share, defined once, and :class:`PanelCommand`, which shows a
command's options in its help under the headings of their panels.

Light to import (typer and the standard library only): ``smcheck --help`` loads it.
"""

from __future__ import annotations


import re
from dataclasses import fields
from typing import Annotated, Optional

import typer
from typer import completion
from typer.core import TyperCommand

from .exceptions import InputError
from .options import Options
from .output import output_path
from .progress import INTERVAL, MODES


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


INPUT = "Input (exactly one source for x)"
COMMON = "Common options"

Positional = Annotated[Optional[str], typer.Argument(
    help="x as a file path, '-' for stdin, a preset name, or numbers (instead of --x...)",
    show_default=False)]
XText = Annotated[Optional[str], typer.Option(
    "--x", help="numbers separated by commas/spaces or a JSON array; ';' separates rows",
    rich_help_panel=INPUT, show_default=False)]
XFile = Annotated[Optional[str], typer.Option(
    "--x-file", help=".npy, .npz[:key], .safetensors[:name], .json, .csv, .tsv, .txt, - "
    "for stdin, or a directory, read lazily: a zarr store[:name] or .npy shards (rows in "
    "sorted name order); never a pickle: .pt/.pkl are refused",
    rich_help_panel=INPUT, show_default=False)]
Random = Annotated[Optional[int], typer.Option(
    "--random", help="N random normal entries (see --rows, --seed, --scale)",
    rich_help_panel=INPUT, show_default=False)]
Rows = Annotated[int, typer.Option("--rows", help="rows of --random", rich_help_panel=INPUT)]
def _seed(value: int) -> int:
    """--seed: a whole number >= 0 (numpy's generators take no negative seed)."""
    if value is not None and value < 0:
        raise InputError(f"--seed {value}: must be a whole number >= 0")
    return value


SEED_HELP = "seed of --random and of every random choice (v, probes, directions)"
Seed = Annotated[int, typer.Option("--seed", help=SEED_HELP, rich_help_panel=INPUT,
                                   callback=_seed)]
SweepSeed = Annotated[int, typer.Option("--seed", help="seed of the random choices (v, probes, "
                                        "directions)", rich_help_panel=COMMON, callback=_seed)]
Scale = Annotated[float, typer.Option("--scale", help="scale of --random",
                                      rich_help_panel=INPUT)]
PresetOpt = Annotated[Optional[str], typer.Option(
    "--preset", help="a named adversarial input (see 'smcheck presets')",
    rich_help_panel=INPUT, show_default=False)]
MaxSize = Annotated[int, typer.Option(
    "--max-size", help="what an input (x, v, t or z) may make smcheck hold at once, checked "
    "before its data is read: a streamed input (a 2-D .npy of 1 MiB or more, .npy shards, "
    "a zarr store) is read a chunk of rows at a time, and its rows may not be longer "
    "than this; any other input (text, JSON, .npz, .safetensors, a smaller .npy, --random, "
    "--preset) may not have more numbers than this in all (a .npy by its header, text by its "
    "length: 32 bytes a number); the default admits a 2000 x 4096 batch or a 10^6 vocabulary "
    "many times over",
    rich_help_panel=INPUT)]
#: --max-size's default, 10^8 numbers (800 MB in float64); the same as
#: smcheck.limits.DEFAULT_MAX_SIZE (not imported here: that would load numpy for --help)
MAX_SIZE = 100_000_000
Impl = Annotated[str, typer.Option(
    "--impl", help="stable, naive, divfree (built in); scipy, torch, jax (imports that "
    "framework); or module.path:function, your callable: imports only that module (from the "
    "current directory or sys.path), never other code", rich_help_panel=COMMON)]
Dtype = Annotated[str, typer.Option(
    "--dtype", help="float64, float32, float16 or bfloat16", rich_help_panel=COMMON)]
Device = Annotated[str, typer.Option(
    "--device", help="where --impl torch runs: cpu, cuda, cuda:N or mps (tensors are put "
    "there, results come back to numpy; an unavailable device is an error before the run, "
    "and the run stays in one process)")]  # torch's only: the command's panel, not Common
Dps = Annotated[int, typer.Option("--dps", help="decimal digits of the mpmath reference, 20 "
                                  "to 100000", rich_help_panel=COMMON)]
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
Output = Annotated[Optional[str], typer.Option(
    "--output", "-o", help="write the report (the JSON with --json) to this file instead of "
    "stdout, whole or not at all; plain text, no colour; - is stdout", rich_help_panel=COMMON,
    show_default=False, callback=output_path)]
NoColor = Annotated[bool, typer.Option(
    "--no-color", help="no colour or other styling in the report, as with $NO_COLOR",
    rich_help_panel=COMMON)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="print nothing; the verdict is the "
                                     "exit status (implies --check)", rich_help_panel=COMMON)]
Top = Annotated[int, typer.Option("--top", help="rows in the table of worst entries",
                                  rich_help_panel=COMMON)]


def _progress_mode(value: str) -> str:
    """--progress: auto, always or never (any case)."""
    mode = str(value).strip().lower()
    if mode not in MODES:
        raise InputError(f"--progress {value}: use one of {', '.join(MODES)}")
    return mode


ProgressMode = Annotated[str, typer.Option(
    "--progress", help=f"auto: a bar on a terminal for long work; when stderr is not a terminal "
    f"(a CI log), a line on stderr every {INTERVAL:g} s of a long run and one at its end; "
    "nothing with --quiet. always: the same even for short work and with --quiet. never: "
    "nothing", rich_help_panel=COMMON, callback=_progress_mode)]
Engine = Annotated[str, typer.Option(
    "--engine", help="reference engine: auto (mpmath below 4096 reference entries; above, "
    "double-double for float64 results and the float64 tier for narrower ones), mpmath (forces "
    "the slow path, --dps digits), dd, f64 (forward with float32/16/bfloat16 only)",
    rich_help_panel=COMMON)]
Verify = Annotated[bool, typer.Option(
    "--verify-reference", help="recompute the reference with mpmath at --dps + 20 digits (at "
    "least 70) and fail if any entry differs by more than its stated precision (costs about "
    "11 us per entry)", rich_help_panel=COMMON)]
Batched = Annotated[bool, typer.Option(
    "--batched", help="call your function (--impl module:function) once on the whole batch, "
    "in the input's layout (a slice of its first axis per chunk), instead of once per row",
    rich_help_panel=COMMON)]
Tensor = Annotated[str, typer.Option(
    "--tensor", help="what your function is given: numpy arrays, torch tensors (on --device) "
    "or jax arrays", rich_help_panel=COMMON)]
Axis = Annotated[int, typer.Option(
    "--axis", help="the axis of x that softmax runs along; every other axis of an N-d input "
    "becomes rows (C order)", rich_help_panel=COMMON)]
Workers = Annotated[Optional[int], typer.Option(
    "--workers", help="processes for the rows of a batch (default: every core); the results "
    "are the same for any number", rich_help_panel=COMMON, show_default=False)]
Scheduler = Annotated[str, typer.Option(
    "--scheduler", help="where the chunks of rows of a batch run: local (this machine's "
    "processes), dask (a Dask LocalCluster of --workers processes, started for the run) or "
    "the address of a running Dask scheduler, tcp://HOST:PORT (its workers read a .npy input "
    "from the same path); needs smcheck[dask] but for local; the results are the same for "
    "every scheduler", rich_help_panel=COMMON)]
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

# --- options of the derivative commands ----------------------------------------------------------

FdOpt = Annotated[str, typer.Option(
    "--fd", help="finite differences: central, richardson, complex, or auto (the most accurate "
    "available)")]
VText = Annotated[Optional[str], typer.Option("--v", help="the vector v of v J (default: random "
                                              "from --seed)", show_default=False)]
LossVText = Annotated[Optional[str], typer.Option(
    "--v", help="the vector v: z = v J(x) (without --v or --z: z = softmax(x))",
    show_default=False)]
TText = Annotated[Optional[str], typer.Option("--t", help="the targets t", show_default=False)]
TFile = Annotated[Optional[str], typer.Option("--t-file", help="t from a file",
                                              show_default=False)]
VFile = Annotated[Optional[str], typer.Option("--v-file", help="v from a file",
                                              show_default=False)]
LogOpt = Annotated[bool, typer.Option("--log", help="log-softmax instead of softmax")]


# --- shell completion (the root's options) -----------------------------------------------------

SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _completion(action: str):
    """The callback of --install-completion / --show-completion SHELL: typer's own (the script
    for ``SHELL``, with ``_SMCHECK_COMPLETE`` as its variable), the shell named rather than
    guessed."""

    def callback(ctx: typer.Context, value: Optional[str]):
        if value is None or ctx.resilient_parsing:
            return None
        if value not in SHELLS:
            raise InputError(f"--{action}-completion {value}: not a shell smcheck completes "
                             f"(use {', '.join(SHELLS)})")
        from typer import completion

        getattr(completion, f"{action}_callback")(ctx, None, value)  # prints, then exits

    return callback


def _completion_option(action: str, help: str):
    return typer.Option(f"--{action}-completion", metavar="SHELL", help=help, is_eager=True,
                        expose_value=False, show_default=False, callback=_completion(action))


# typer's completion classes (what answers `_SMCHECK_COMPLETE=complete_bash smcheck`), as
# Typer(add_completion=True) registers them: typer.main has imported them already, so this
# costs microseconds and loads nothing
completion.completion_init()
InstallCompletion = Annotated[Optional[str], _completion_option(
    "install", "install completion of smcheck's commands and options for SHELL (bash, zsh, "
    "fish, powershell, pwsh) in its start-up file, and exit")]
ShowCompletion = Annotated[Optional[str], _completion_option(
    "show", "print the completion script for SHELL (to install it yourself), and exit")]


def no_such_option(exc) -> str:
    """An unknown option, with the command's options that look like it (difflib, stricter
    than click's 0.6, which offered --rows for --verbose), or where to find them."""
    import difflib

    ctx = exc.ctx
    names = [o for p in (ctx.command.params if ctx else []) for o in getattr(p, "opts", [])
             if o.startswith("--")]
    close = difflib.get_close_matches(exc.option_name, names, n=3, cutoff=0.75)
    where = f"smcheck {ctx.info_name} --help" if ctx and ctx.info_name != "smcheck" else (
        "smcheck --help")
    return (f"no such option: {exc.option_name}"
            + (f" (did you mean {' or '.join(close)}?)" if close else f"; see '{where}'"))


#: a word that is a number (or numbers: "-1,2") beginning with a minus sign
_NEGATIVE = re.compile(r"^-(\d|\.\d|inf(\b|,)|nan(\b|,))", re.IGNORECASE)


def negative_input(args: list[str], app) -> list[str]:
    """``smcheck forward -1,2``: click reads a word that begins with '-' as an option. A word
    that is a number there, and is not the value of an option before it, is the positional
    INPUT: it is passed as ``--x=WORD``, which is what numbers given as INPUT mean."""
    if not any(_NEGATIVE.match(str(a)) for a in args):
        return args  # the common case: no command is built here
    import typer.main

    group = typer.main.get_command(app)
    name = next((a for a in args if not str(a).startswith("-")), None)
    cmd = getattr(group, "commands", {}).get(name)
    if cmd is None:
        return args
    takes_value = {o for p in cmd.params if p.param_type_name == "option" and not p.is_flag
                   for o in p.opts}
    out, after_name, value_next = [], False, False
    for a in map(str, args):
        if value_next:
            value_next = False
        elif not after_name:
            after_name = a == name
        elif a in takes_value:
            value_next = True
        elif _NEGATIVE.match(a):
            if any(b == "--x" or b.startswith("--x=") for b in map(str, args)):
                raise InputError(f"give exactly one source for x, got INPUT '{a}' and --x")
            a = "--x=" + a
        out.append(a)
    return out


Validate = Annotated[Optional[str], typer.Option(
    "--validate", help="validate this --json document (a file, or - for stdin) instead: "
    "exit 0 valid, 1 not (needs the jsonschema package)", show_default=False)]


#: a command's parameter whose Options field has another name
OPTION_NAMES = {"verify_reference": "verify"}


def options_of(params: dict, drop: tuple = ()) -> dict:
    """The keywords of :class:`smcheck.options.Options` among a command's parameters
    (``locals()``), renamed where the flag's name differs; ``drop`` leaves some out."""
    names = {f.name for f in fields(Options)}
    out = {OPTION_NAMES.get(k, k): v for k, v in params.items() if k not in drop}
    return {k: v for k, v in out.items() if k in names}
