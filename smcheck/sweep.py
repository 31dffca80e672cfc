"""The adversarial battery: every preset x every dtype x forward, log-softmax, jacobian, vjp and
loss, against one implementation; and its JUnit XML.

Each case is one run of the command's function from :mod:`smcheck.run`, summarised as a plain
dict (the JSON's ``"cases"``); the verdicts are exactly those of the per-command runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import run
from .dtypes import DTYPE_NAMES, dtype_info
from .errors_ulp import error_ratio
from .exceptions import InputError
from .impls import get_implementation
from .options import Options
from .presets import PRESETS, get_preset
from .report import input_conditions
from .results import jnum
from .sentences import failure_lines

COMMANDS = ("forward", "log_softmax", "jacobian", "vjp", "loss")


def one_hot_targets(x: np.ndarray) -> np.ndarray:
    """t = 1 at each row's largest entry: the usual classification target, whose z never
    underflows (s_max >= 1/n), so the loss applies on every preset."""
    X = np.atleast_2d(x)
    t = np.zeros(X.shape)
    with np.errstate(invalid="ignore"):
        m = np.argmax(np.where(np.isnan(X), -np.inf, X), axis=-1)
    t[np.arange(X.shape[0]), m] = 1.0
    return t.reshape(np.shape(x))


def run_case(command: str, x: np.ndarray, impl, dtype: str, dps: int, seed: int = 0,
             engine: str = "auto", allow_ftz: bool = False, device: str = "cpu"):
    o = Options(impl=impl, dtype=dtype, dps=dps, engine=engine, allow_ftz=allow_ftz, seed=seed,
                device=device)
    if command == "forward":
        return run.run_forward(x, o)
    if command == "log_softmax":
        return run.run_forward(x, o.with_(log=True))
    if command == "jacobian":
        return run.run_jacobian(x, o)
    if command == "vjp":
        return run.run_vjp(x, options=o)
    if command == "loss":
        return run.run_loss(x, one_hot_targets(x), o.with_(seed=0))
    raise InputError(f"unknown sweep command '{command}'")


def summarize(report, preset: str, command: str, seconds: float) -> dict:
    """One case as the JSON's "cases" entry: verdict, worst ULP of the reference check, the
    worst error relative to its allowance, each check's verdict, and the failure lines."""
    ref = next((c for c in report.checks if c.name == "reference"), None)
    failing = [c for c in report.checks if c.status == "fail"]
    ratio = None
    if ref is not None and ref.entries:
        e = ref.entries[0]
        ratio = error_ratio(e.abs_err, e.allowed)
    return {
        "preset": preset, "dtype": report.dtype, "command": command, "impl": report.impl,
        "passed": report.passed,
        "max_ulp": jnum(ref.max_ulp) if ref is not None else None,
        "scaled": jnum(ratio),
        "checks": {c.name: c.passed for c in report.checks},
        "failures": [f"{c.name}: {line}" for c in failing for line in failure_lines(c)[:2]],
        "input_conditions": input_conditions(report),
        "undefined_rows": len(report.undefined_rows),
        "seconds": round(seconds, 3),
    }


@dataclass
class SweepResult:
    impl: str
    dtypes: list[str]
    presets: list[str]
    commands: list[str]
    dps: int
    cases: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.cases)

    def to_json(self, version: str) -> dict:
        return {"smcheck": version, "command": "sweep", "impl": self.impl,
                "dtype": self.dtypes if len(self.dtypes) > 1 else self.dtypes[0],
                "dtypes": self.dtypes, "presets": self.presets, "commands": self.commands,
                "dps": self.dps, "shape": [len(self.presets), len(self.dtypes),
                                           len(self.commands)],
                "passed": self.passed,
                "checks": [{"name": f"{c['preset']}/{c['dtype']}/{c['command']}",
                            "passed": c["passed"], "max_ulp": c["max_ulp"]} for c in self.cases],
                # seconds stay out: two identical runs print identical JSON
                "cases": [{k: v for k, v in c.items() if k != "seconds"} for c in self.cases],
                "failed": sum(not c["passed"] for c in self.cases), "total": len(self.cases)}


def resolve_dtypes(dtypes) -> list[str]:
    if dtypes is None:
        return ["float64"]
    if isinstance(dtypes, str):
        dtypes = [dtypes]
    out = []
    for d in dtypes:
        for part in str(d).split(","):
            part = part.strip()
            if part == "all":
                out.extend(DTYPE_NAMES)
            elif part:
                out.append(dtype_info(part).name)
    return list(dict.fromkeys(out)) or ["float64"]


def run_sweep(impl="stable", dtypes=None, presets=None, commands=COMMANDS, dps: int = 50,
              seed: int = 0, engine: str = "auto",
              progress: Callable[[str], None] | None = None,
              allow_ftz: bool = False, device: str = "cpu") -> SweepResult:
    """Run the battery. ``progress(label)`` is called before each case (a ``progress`` with a
    ``total`` attribute gets the number of cases there first); ``allow_ftz`` accepts
    subnormal results flushed to zero; ``device`` is where ``impl="torch"`` runs."""
    # fail early on an unknown or missing impl, or an unusable device
    implementation = get_implementation(impl).for_options(Options(impl=impl, device=device))
    if implementation.one_function:
        # one callable computes one quantity: a user's function is swept as a softmax
        commands = tuple(c for c in commands if c == "forward") or ("forward",)
    dts = resolve_dtypes(dtypes)
    names = list(PRESETS) if not presets else [get_preset(p).name for p in presets]
    for c in commands:
        if c not in COMMANDS:
            raise InputError(f"unknown sweep command '{c}' (use {', '.join(COMMANDS)})")
    res = SweepResult(implementation.name, dts, names, list(commands), dps)
    if hasattr(progress, "total"):
        progress.total = len(names) * len(dts) * len(commands)
    for name in names:
        x = get_preset(name).make()
        for dt in dts:
            for command in commands:
                if progress is not None:
                    progress(f"{name} {dt} {command}")
                t0 = time.perf_counter()
                rep = run_case(command, x, implementation, dt, dps, seed, engine, allow_ftz,
                               device)
                res.cases.append(summarize(rep, name, command, time.perf_counter() - t0))
    return res


def junit_xml(res: SweepResult) -> str:
    """JUnit XML: one testsuite per dtype, one testcase per (preset, command), the failure
    message carrying the numbers."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name=f"smcheck sweep {res.impl}",
                      tests=str(len(res.cases)),
                      failures=str(sum(not c["passed"] for c in res.cases)))
    for dt in res.dtypes:
        cases = [c for c in res.cases if c["dtype"] == dt]
        suite = ET.SubElement(root, "testsuite", name=f"smcheck.{res.impl}.{dt}",
                              tests=str(len(cases)),
                              failures=str(sum(not c["passed"] for c in cases)),
                              time=f"{sum(c['seconds'] for c in cases):.3f}")
        for c in cases:
            tc = ET.SubElement(suite, "testcase", classname=f"smcheck.{res.impl}.{dt}",
                               name=f"{c['preset']}.{c['command']}", time=f"{c['seconds']:.3f}")
            if not c["passed"]:
                bad = [line.split(":")[0] for line in c["failures"]] or ["a check"]
                bad = list(dict.fromkeys(bad))
                f = ET.SubElement(tc, "failure", type="smcheck",
                                  message=f"{', '.join(bad)} failed; max ULP {c['max_ulp']}")
                f.text = "\n".join(c["failures"])
            ET.SubElement(tc, "system-out").text = (
                f"max ULP {c['max_ulp']}, worst error / allowance {c['scaled']}")
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
