"""The commands as functions: input array in, :class:`~smcheck.results.Report` out.

Each pipeline runs one way: round the input to the dtype, set aside rows with no defined
softmax, run the implementation, compute the exact reference, run the registered checks.
The CLI calls these and renders; a test suite can call them directly.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import numpy as np

from . import checks
from .checks.forward import ForwardCase, overflow_block
from .checks.jacobian import JacobianCase
from .checks.loss import LossCase, loss_z
from .checks.vjp import VjpCase
from .checks.fd import row_rng
from .dtypes import DtypeInfo, dtype_info
from .errors_ulp import METRICS, Overrides
from .exceptions import InputError
from .finite_diff import METHODS
from .impls import get_implementation
from .longrow import (LONG_ROW, check_long_rows, is_long, masked_reason,
                      undefined_reason)
from .memory import check_memory, held_bytes
from .ndim import as_rows, companion_rows
from .options import Options
from .parallel import default_workers, rows_per_chunk, run_rows
from .reference import choose_engine, exact_loss_value, exact_softmax, exact_vjp
from .reference.dispatch import DENSE_COMMANDS
from .reference.verify import verify_softmax, verify_vjp
from .results import NO_RESULT, RESULT_MAX, Report

#: Vectors are shown in the report (and the JSON's "vectors") up to this many entries.
SMALL_N = 16


def validate_common(dps: int, overrides: Overrides, top: int, metric: str) -> None:
    if not (20 <= int(dps) <= 100000):
        raise InputError(f"--dps {dps}: use 20 to 100000 digits (judging a float64 result to "
                         "a fraction of an ULP needs 17, plus guard digits)")
    for name, v in (("--rtol", overrides.rtol), ("--atol", overrides.atol),
                    ("--max-ulp", overrides.max_ulp)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise InputError(f"{name} {v}: must be a finite number >= 0")
    if top < 0:
        raise InputError(f"--top {top}: must be >= 0")
    if metric not in METRICS:
        raise InputError(f"--metric {metric}: use one of {', '.join(METRICS)}")


def split_rows(x: np.ndarray, info: DtypeInfo, row_offset: int = 0):
    """Round x to the dtype; return (rounded rows as float64, indices of defined rows, the
    undefined rows with their reason). ``row_offset`` numbers the rows of a chunk as rows of
    the whole input."""
    X = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if X.ndim != 2 or X.shape[-1] == 0:
        raise InputError(f"expected a non-empty vector or 2-D batch, got shape {X.shape}")
    Xr = info.round64(X)
    undefined, defined = [], []
    for r in range(X.shape[0]):
        row = Xr[r]
        reason = undefined_reason(row, X[r], info)
        if reason is None and np.all(row == -np.inf):
            given = np.flatnonzero(np.isfinite(X[r]))
            reason = masked_reason(info, (int(given[0]), float(X[r, given[0]]))
                                   if given.size else None)
        if reason:
            undefined.append({"row": r + row_offset, "reason": f"softmax undefined: {reason}"})
        else:
            defined.append(r)
    return Xr, np.array(defined, dtype=np.int64), undefined


def defined_rows(Xr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rows of Xr that ``rows`` lists: Xr itself (no copy) when that is every row."""
    return Xr if rows.size == Xr.shape[0] else Xr[rows]


def _ticker(progress: Callable[[int, int], None] | None, total: int):
    if progress is None:
        return None
    return lambda k: progress(k, total)


def run_forward(x, options: Options | None = None, *, row_offset: int = 0,
                progress: Callable[[int, int], None] | None = None, **kw) -> Report:
    """Check ``impl``'s softmax (or log-softmax) of ``x`` (a vector or a batch of rows).

    ``progress(done, total)`` is called as the reference work advances; ``verify``
    recomputes the reference with more digits (see :mod:`smcheck.reference.verify`); ``allow_ftz``
    accepts subnormal results flushed to zero; ``strict_dtype`` fails an implementation that
    does not compute in ``dtype``.
    """
    o = Options.of(options, **kw)
    dps, log, metric, top, verify = o.dps, o.log, o.metric, o.top, o.verify
    allow_ftz, strict_dtype = o.allow_ftz, o.strict_dtype
    _validate_forward(o)
    info, implementation, overrides, engine, x, Xr, rows, undefined = _prepare(
        x, o, "forward", row_offset)
    batch = x.ndim == 2
    X = defined_rows(Xr, rows)
    labels = rows + row_offset
    tick = _ticker(progress, 3 * X.size)
    blocks = {}

    def overflow():
        blocks["overflow"] = overflow_block(X, labels, info, batch)

    if X.shape[0]:
        case = ForwardCase(X=X, rows=labels, info=info, impl=implementation, log=log,
                           metric=metric, overrides=overrides, dps=dps, computed=None,
                           exact=None, top=top, progress=tick, engine=engine,
                           ftz=allow_ftz, strict_dtype=strict_dtype)
        case.computed = case.evaluate(X)
        case.exact = exact_softmax(X, dps, tick, engine=engine)
        results = checks.run_checks("forward", case, meanwhile=overflow)
        precision = case.exact.precision
    else:
        case, results = None, []
        precision = f"mpmath, {dps} significant digits"
    result = np.full(Xr.shape, np.nan)
    if case is not None:
        result[rows] = case.computed
    result_list = _result_list(result, rows)
    notes = []
    if not X.shape[0]:
        notes.append("no row has a defined softmax: nothing to check")
    if "overflow" not in blocks:
        overflow()
    if verify and case is not None:
        blocks["reference_verification"] = verify_softmax(X, case.exact, labels, dps, log=log)
    report = Report(
        command="forward", impl=implementation.name, dtype=info.name, dps=dps,
        shape=list(x.shape) if batch else [1, int(x.size)], checks=results,
        reference=precision, undefined_rows=undefined, notes=notes, blocks=blocks,
        options={"log": log, "metric": metric if log else None, "allow_ftz": allow_ftz,
                 "strict_dtype": strict_dtype},
        reference_bound=None if case is None else case.exact.rel_bound,
        result=result_list)
    if case is not None:
        cmp = case.main
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            report.arrays = {"rows": labels, "d": case.exact.d, "ulp_err": cmp.ulp_err,
                             "allowed_ulp": cmp.allowed / cmp.ulp, "ok": cmp.ok}
    if Xr.shape[-1] <= SMALL_N and Xr.shape[0] <= 4 and case is not None:
        hi = case.exact.y_hi if log else case.exact.s_hi
        ref = np.full(Xr.shape, np.nan)
        ref[rows] = hi
        report.vectors = {"x": Xr, "computed": result, "reference": ref, "rows": list(range(Xr.shape[0]))}
    return report


# --- the derivative commands ---------------------------------------------------------------------

#: Beyond this n the Jacobian is not formed: v^T J u on random probe pairs instead.
MAX_DENSE = 2048


def _validate_forward(o: Options) -> None:
    if o.metric != "scaled" and not o.log and o.metric in METRICS:
        raise InputError(f"--metric {o.metric} applies to log-softmax (--log) and to the "
                         "Jacobian: softmax entries are judged by their relative error")


def _prepare(x, o: Options, command: str, row_offset=0):
    """Validate, round x to the dtype, set undefined rows aside, choose the engine (on the
    whole input: a chunk of a batch was given the batch's)."""
    overrides = Overrides(o.rtol, o.atol, o.max_ulp)
    validate_common(o.dps, overrides, o.top, o.metric)
    info = dtype_info(o.dtype)
    # rows in C order whatever the input's layout (a Fortran-order zarr store, --axis 0): an
    # implementation's sums along a row depend on it (numpy's are pairwise only along
    # contiguous rows), and the same numbers must give the same report
    x = np.ascontiguousarray(x, dtype=np.float64)
    Xr, rows, undefined = split_rows(x, info, row_offset)
    implementation = get_implementation(o.impl).for_options(o).for_rows(rows + row_offset)
    engine = choose_engine(Xr, o.engine, info.name, command)
    return info, implementation, overrides, engine, x, Xr, rows, undefined


def _companion(name: str, arr, x_shape, info: DtypeInfo, finite: bool = True) -> np.ndarray:
    """v, t or z: same shape as x (a 1-D one is used for every row), rounded to the dtype,
    in C order (as x: :func:`_prepare`)."""
    a = np.ascontiguousarray(arr, dtype=np.float64)
    rows, n = x_shape
    if a.ndim == 1 and a.shape[0] == n:
        a = np.broadcast_to(a, (rows, n))
    a = np.atleast_2d(a)
    if a.shape != (rows, n):
        raise InputError(f"--{name} has shape {tuple(np.shape(arr))} but x has shape "
                         f"{(rows, n) if rows > 1 else (n,)}")
    if finite and not np.all(np.isfinite(a)):
        raise InputError(f"--{name} must be finite (found inf or nan)")
    with np.errstate(over="ignore"):
        r = info.round64(a)
    if finite and not np.all(np.isfinite(r)):
        raise InputError(f"--{name} overflows {info.name} (largest finite value {info.max:g})")
    return r


def _result_list(full: np.ndarray, rows: np.ndarray):
    """The computed values as nested lists shaped like the report's ``shape`` (a list of
    rows, a 1-D input one row; None for an undefined row), or NO_RESULT when they are too
    many for the JSON."""
    if full.size > RESULT_MAX:
        return NO_RESULT
    keep = set(rows.tolist())
    return [row if r in keep else None for r, row in enumerate(full.tolist())]


def _check_fd(fd: str) -> str:
    if fd not in METHODS + ("auto",):
        raise InputError(f"--fd {fd}: use one of {', '.join(METHODS + ('auto',))}")
    return fd


def run_jacobian(x, options: Options | None = None, *, row_offset=0, progress=None,
                 **kw) -> Report:
    """Check the Jacobian of softmax (log-softmax): every entry against the exact one and
    finite differences, its symmetry and zero sums; beyond ``max_dense``, v^T J u probes."""
    o = Options.of(options, **kw)
    dps, log, metric, fd, max_dense, top = o.dps, o.log, o.metric, o.fd, o.max_dense, o.top
    info, implementation, overrides, engine, x, Xr, rows, undefined = _prepare(
        x, o, "jacobian", row_offset)
    _check_fd(fd)
    if max_dense < 1:
        raise InputError(f"--max-dense {max_dense}: must be >= 1")
    X = defined_rows(Xr, rows)
    n = Xr.shape[1]
    dense = n <= max_dense
    tick = _ticker(progress, X.size)
    checks_out, result, vectors, blocks = [], NO_RESULT, {}, {}
    full = np.full((Xr.shape[0], n, n), np.nan) if dense and Xr.shape[0] * n * n <= RESULT_MAX \
        else None  # the JSON's "result"
    if X.shape[0]:
        exact = exact_softmax(X, dps, tick, one_minus=True, engine=engine)
        case = JacobianCase(X=X, rows=rows + row_offset, info=info, impl=implementation, log=log,
                            metric=metric, overrides=overrides, dps=dps, exact=exact,
                            fd_method=fd, top=top, dense=dense, probes=o.probes, seed=o.seed,
                            engine=engine, ftz=o.allow_ftz, strict_dtype=o.strict_dtype)
        if dense:
            case.J = case.evaluate(X)
            if full is not None:
                full[rows] = case.J
        checks_out = checks.run_checks("jacobian", case)
        precision = exact.precision
        if o.verify:
            blocks["reference_verification"] = verify_softmax(X, exact, rows + row_offset, dps,
                                                              one_minus=True)
        if dense and n <= 8:
            vectors = {"matrix": case.J[0].tolist(), "failing": (~case.cmp.ok[0]).tolist()}
    else:
        precision = f"mpmath, {dps} significant digits"
    if full is not None:
        result = _result_list(full, rows)
    return Report(
        command="jacobian", impl=implementation.name, dtype=info.name, dps=dps,
        shape=list(Xr.shape), checks=checks_out, reference=precision,
        undefined_rows=undefined, blocks=blocks,
        notes=[] if X.shape[0] else ["no row has a defined softmax: nothing to check"],
        options={"log": log, "metric": metric, "fd": fd, "max_dense": max_dense,
                 "mode": "dense" if dense else "probes", "allow_ftz": o.allow_ftz,
                 "strict_dtype": o.strict_dtype},
        vectors=vectors, result=result)


def run_vjp(x, v=None, options: Options | None = None, *, row_offset=0, progress=None,
            **kw) -> Report:
    """Check z = v J(x) = s * (v - <v, s>) (O(n), J never formed) against the exact VJP, a
    directional finite difference, and sum z = 0. Without ``v``, v is random from ``seed``."""
    o = Options.of(options, **kw)
    dps, fd, seed, top, allow_ftz, strict_dtype = (o.dps, o.fd, o.seed, o.top, o.allow_ftz,
                                                   o.strict_dtype)
    info, implementation, overrides, engine, x, Xr, rows, undefined = _prepare(
        x, o, "vjp", row_offset)
    _check_fd(fd)
    v_given = v is not None
    if v is None:
        v = np.array([row_rng(seed, 1, r + row_offset).standard_normal(Xr.shape[1])
                      for r in range(Xr.shape[0])])
    V = _companion("v", v, Xr.shape, info)
    X = defined_rows(Xr, rows)
    full = np.full(Xr.shape, np.nan)
    # the v used (rounded to the dtype; drawn when not given), when small enough for the JSON
    checks_out, blocks = [], {"v_values": V.tolist() if V.size <= RESULT_MAX else None}
    if X.shape[0]:
        ex = exact_vjp(X, V[rows], dps, _ticker(progress, X.size), engine=engine)
        case = VjpCase(X=X, V=V[rows], rows=rows + row_offset, info=info, impl=implementation,
                       overrides=overrides, dps=dps, exact=ex, z=None, fd_method=fd, top=top,
                       seed=seed, engine=engine, ftz=allow_ftz, strict_dtype=strict_dtype)
        case.z = case.evaluate(X)
        checks_out = checks.run_checks("vjp", case)
        full[rows] = case.z
        blocks["dot"] = [{"row": int(r) + row_offset, "<v,s>": d}
                         for r, d in zip(rows, ex.dot_str)]
        precision = ex.softmax.precision
        if o.verify:
            blocks["reference_verification"] = verify_vjp(X, V[rows], ex, rows + row_offset, dps)
    else:
        precision = f"mpmath, {dps} significant digits"
    return Report(command="vjp", impl=implementation.name, dtype=info.name, dps=dps,
                  shape=list(Xr.shape), checks=checks_out, reference=precision,
                  undefined_rows=undefined, blocks=blocks,
                  notes=[] if X.shape[0] else ["no row has a defined softmax: nothing to check"],
                  options={"fd": fd, "v": "given" if v_given else f"random (seed {seed})",
                           "allow_ftz": allow_ftz, "strict_dtype": strict_dtype},
                  result=_result_list(full, rows))


def run_loss(x=None, t=None, options: Options | None = None, *, v=None, z=None, row_offset=0,
             progress=None, **kw) -> Report:
    """Check the loss gradient D_z l = -t / z of l(z, t) = -sum t_i log z_i, with z the VJP
    v J(x) (``v``), given (``z``), or softmax(x) (neither); and the z_i = 0 condition."""
    o = Options.of(options, **kw)
    dps, fd, seed, top, allow_ftz, strict_dtype, verify = (
        o.dps, o.fd, o.seed, o.top, o.allow_ftz, o.strict_dtype, o.verify)
    if t is None:
        raise InputError("loss needs targets: give --t or --t-file")
    if v is not None and z is not None:
        raise InputError("give --v (z = v J(x)) or --z (z given), not both")
    mode = "vjp" if v is not None else "given" if z is not None else "softmax"
    if mode == "given":
        zarr = np.asarray(z, dtype=np.float64)
        if x is None:
            x = np.zeros(zarr.shape)
    if x is None:
        raise InputError("no input for x: give --x, --x-file, --random N or --preset NAME")
    info, implementation, overrides, engine, x, Xr, rows, undefined = _prepare(
        x, o, "loss", row_offset)
    _check_fd(fd)
    if mode == "given":
        rows = np.arange(Xr.shape[0])
        undefined = []
    T = _companion("t", t, Xr.shape, info)[rows]
    X = defined_rows(Xr, rows)
    if mode == "given":
        Zexact = _companion("z", z, Xr.shape, info)
        parts = dict(Z=info.round64(Zexact), z_exact=Zexact,
                     floor=np.zeros(Zexact.shape))
    elif X.shape[0]:
        V = _companion("v", v, Xr.shape, info)[rows] if mode == "vjp" else None
        parts = loss_z(X, T, V, mode, info, dps, engine, _ticker(progress, X.size))
    checks_out, blocks = [], {}
    full = np.full(Xr.shape, np.nan)
    if X.shape[0]:
        case = LossCase(T=T, rows=rows + row_offset, info=info, impl=implementation,
                        overrides=overrides, dps=dps, mode=mode, g=None, fd_method=fd, top=top,
                        seed=seed, engine=engine, ftz=allow_ftz, strict_dtype=strict_dtype,
                        **parts)
        case.g = case.evaluate(case.Z)
        checks_out = checks.run_checks("loss", case)
        full[rows] = case.g
        zc = next(c for c in checks_out if c.name == "zero_condition").details["zero_condition"]
        if mode == "vjp":
            zc["<v,s>"] = [{"row": int(r) + row_offset, "value": d}
                           for r, d in zip(rows, case.dot_str)]
        blocks["zero_condition"] = zc
        blocks["loss_value"] = exact_loss_value(case.Z, T, dps)
        if verify and mode == "vjp":
            blocks["reference_verification"] = verify_vjp(X, case.V, case.vjp, rows + row_offset,
                                                          dps)
        elif verify and mode == "softmax":
            blocks["reference_verification"] = verify_softmax(X, case.exact_s,
                                                              rows + row_offset, dps)
    precision = (case.exact_s.precision if mode != "given" and X.shape[0] else
                 f"mpmath, {dps} significant digits (relative error below 1e-{dps - 2})")
    return Report(command="loss", impl=implementation.name, dtype=info.name, dps=dps,
                  shape=list(Xr.shape), checks=checks_out, reference=precision,
                  undefined_rows=undefined, blocks=blocks,
                  options={"z": mode, "fd": fd, "x_label": "z_i", "allow_ftz": allow_ftz,
                           "strict_dtype": strict_dtype},
                  notes=[] if X.shape[0] else ["no row has a defined softmax: nothing to check"],
                  result=_result_list(full, rows))


#: the commands' functions, by name
COMMANDS = {"forward": run_forward, "jacobian": run_jacobian, "vjp": run_vjp, "loss": run_loss}


def check_rows(command: str, x, options: Options, *, companions: dict | None = None,
               workers: int | None = None, progress=None, keep_arrays: bool = False,
               chunk_rows: int | None = None, scheduler: str | None = None) -> Report:
    """``command`` over the rows of x: the engine chosen once on the whole input, the rows in
    chunks (on ``workers`` processes, or on the Dask cluster ``scheduler`` names, default
    ``options.scheduler``; :mod:`smcheck.parallel`), the chunks' reports merged
    (:mod:`smcheck.checks.merge`). ``chunk_rows`` defaults to
    :func:`~smcheck.parallel.rows_per_chunk` of the row length and the engine; the report is
    the same for any chunking, any number of workers and any scheduler."""
    if scheduler is not None:
        options = options.with_(scheduler=scheduler)
    x, companions, options = nd_inputs(x, companions, options)
    shape = np.shape(x)
    n = int(shape[-1]) if len(shape) else 1
    rounded = np.empty(0) if np.size(x) == 0 else x
    engine = choose_engine(rounded, options.engine, options.dtype, command)
    options = options.with_(engine=engine)
    if is_long(command, n, engine):  # a segment at a time (smcheck.longrow)
        validate_common(options.dps, Overrides(options.rtol, options.atol, options.max_ulp),
                        options.top, options.metric)
        _validate_forward(options)
        for asked, what in ((options.verify, "--verify-reference recomputes every entry with "
                             "mpmath"), (keep_arrays, "--plot draws every entry")):
            if asked:
                raise InputError(f"{what}: rows of more than {LONG_ROW:,} entries are too "
                                 "long for it")
        return with_layout(check_long_rows(x, options, engine, progress), options)
    dense = command in DENSE_COMMANDS
    chunk_rows = chunk_rows or rows_per_chunk(n, dense, engine == "mpmath",
                                              command in ("vjp", "loss"))
    batch = options.batch_shape
    if options.batched and batch and len(batch) > 1:  # whole slices of the first axis
        inner = int(np.prod(batch[1:]))
        chunk_rows = max(inner, chunk_rows // inner * inner)
    rows = int(shape[0]) if len(shape) == 2 else 1
    if options.scheduler in ("local", "dask") and rows:  # this machine's processes
        procs = 1 if rows <= chunk_rows else min(
            default_workers() if workers is None else max(1, int(workers)),
            -(-rows // chunk_rows))
        check_memory(command, min(rows, chunk_rows) * n, n, procs,
                     held_bytes(command, n, options.max_dense, options.probes))
    report = run_rows(partial(COMMANDS[command], options=options), x, workers=workers,
                      chunk_rows=chunk_rows, companions=companions, progress=progress,
                      keep_arrays=keep_arrays, scheduler=options.scheduler,
                      row_work=n * n if dense else n, merge=lambda reps, shp: checks.merge_reports(reps, shp, options.top))
    return with_layout(report, options)


def nd_inputs(x, companions: dict | None, options: Options):
    """x and its companions (v, t, z) as rows along ``options.axis`` (an N-d input's other
    axes become the rows, in C order), and the options with x's ``batch_shape``."""
    if x is None:
        return x, companions or {}, options
    X, batch = as_rows(x, options.axis)
    comps = {k: companion_rows(a, options.axis, batch, k) for k, a in (companions or {}).items()}
    return X, comps, options.with_(batch_shape=batch)


def with_layout(report: Report, options: Options) -> Report:
    """The report with the axis softmax ran along and the shape of x's other axes (the
    tables name a row by its N-d index too), and how the implementation was called."""
    report.options["axis"] = options.axis
    report.options["batch_shape"] = list(options.batch_shape) if options.batch_shape else None
    report.options.update(batched=options.batched, tensor=options.tensor, device=options.device)
    return report
