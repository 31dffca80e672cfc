"""The options of a check, as one typed object (the CLI's flags, the API's keywords)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .exceptions import InputError

#: the kinds of device ``--device`` names (cuda:N for one of several GPUs)
DEVICES = ("cpu", "cuda", "mps")
#: the schedulers of chunks of rows that are not an address: this machine's processes, or a
#: Dask LocalCluster started for the run (see smcheck.parallel and smcheck.cluster)
LOCAL = "local"
DASK = "dask"
#: chunks in flight per worker (per worker thread on a Dask cluster): enough that a worker
#: never waits for the next while a slower one finishes, few enough that memory stays O(chunk)
IN_FLIGHT = 3


def check_scheduler(value: str) -> str:
    """``local``, ``dask`` or an address ``distributed.Client`` takes (``tcp://HOST:PORT``,
    ``tls://...``, ``HOST:PORT``), normalised; anything else is an InputError."""
    s = str(value).strip()
    if s.lower() in (LOCAL, DASK):
        return s.lower()
    host, sep, port = s.rpartition(":")
    if "://" in s or (sep and host and port.isdigit()):
        return s
    raise InputError(f"--scheduler {value}: use local, dask, or the address of a Dask "
                     "scheduler (tcp://HOST:PORT)")


@dataclass(frozen=True)
class Options:
    """What to check and how: the implementation, the dtype, the reference's precision and
    engine, the tolerance overrides, the finite-difference method, and what to report."""

    impl: object = "stable"  # a name, module:function, an Implementation or a callable
    dtype: str = "float64"
    dps: int = 50
    log: bool = False  # log-softmax (forward, jacobian)
    metric: str = "scaled"  # scaled or strict (log-softmax, Jacobian)
    fd: str = "auto"  # finite differences: central, richardson, complex, auto
    max_dense: int = 2048  # jacobian: beyond this n, v^T J u probes
    probes: int = 4  # jacobian: probe pairs per row beyond max_dense
    seed: int = 0  # random v and probes
    rtol: float | None = None
    atol: float | None = None
    max_ulp: float | None = None
    top: int = 10  # worst entries listed
    engine: str = "auto"  # reference engine: auto, mpmath, dd, f64
    verify: bool = False  # recompute the reference with more digits
    allow_ftz: bool = False  # accept subnormal results flushed to zero
    strict_dtype: bool = False  # fail an implementation that does not compute in dtype
    batched: bool = False  # a user's callable gets a chunk of rows in one call
    tensor: str = "numpy"  # what a user's callable is given: numpy, torch or jax arrays
    device: str = "cpu"  # torch (the adapter, or --tensor torch): cpu, cuda, cuda:N, mps
    axis: int = -1  # the axis of x that softmax runs along (N-d inputs)
    #: where chunks of rows run: local, dask (a LocalCluster) or a Dask scheduler's address
    scheduler: str = LOCAL
    #: the shape of x's other axes, when x is N-d (set from x and ``axis``; not an option)
    batch_shape: tuple | None = None

    def __post_init__(self):
        device = str(self.device).strip().lower()
        if device.split(":")[0] not in DEVICES:
            raise InputError(f"--device {self.device}: use cpu, cuda, cuda:N or mps")
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "scheduler", check_scheduler(self.scheduler))

    def with_(self, **changes) -> "Options":
        return replace(self, **changes)

    @classmethod
    def of(cls, options: "Options | None" = None, **kw) -> "Options":
        """``options`` with the keywords ``kw`` changed (a TypeError names an unknown one)."""
        return replace(options or cls(), **kw)
