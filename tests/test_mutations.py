"""The mutation corpus (tests/mutants.py) against smcheck's verdicts: zero false passes, zero
false failures.

Every mutant must FAIL wherever its error is real, decided independently of smcheck (mpmath at 40
digits; real = more than 100 rounding budgets of a correct method, or a non-finite value where
the exact one is finite; see mutants.py). Every control must PASS on every input whose softmax is
defined, and must itself be within its rounding budget. A wrong verdict is a finding about
smcheck: it stays in the corpus, marked xfail(strict=True) in KNOWN_BUGS with the reason. The
verdict tables are printed at the end of the run (the pytest_terminal_summary hook in
conftest.py).
"""

import mutants as M
import pytest

from smcheck.sentences import failure_lines

#: case id -> why smcheck's verdict there is wrong (xfail, strict: fixing smcheck must fail it)
KNOWN_BUGS: dict[str, str] = {}


def _param(case):
    reason = KNOWN_BUGS.get(case.id)
    marks = [pytest.mark.xfail(strict=True, reason=f"smcheck bug: {reason}")] if reason else []
    return pytest.param(case, id=case.id, marks=marks)


def _failures(rep) -> str:
    return "; ".join(f"{c.name}: {failure_lines(c)[:1]}" for c in rep.checks if not c.passed)


@pytest.mark.parametrize("case", [_param(c) for c in M.CASES])
def test_verdict(case):
    out, rep = M.run_case(case, KNOWN_BUGS.get(case.id, ""))
    if out.kind == "control":
        assert not out.real, (f"the control itself errs by {out.worst:.3g} x the real-error "
                              f"threshold at {out.real}: the corpus is wrong, not smcheck")
        assert rep.passed, f"FALSE FAIL: {_failures(rep)}"
    elif out.real:
        assert not rep.passed, (f"FALSE PASS: the error is real at {out.real} ({out.worst:.3g} x "
                                "the threshold) but every check passed")


def test_every_mutant_is_exercised():
    """Each mutant has an input where its error is real, in each dtype it runs in (so none of
    them passes the corpus vacuously); the corpus holds every mutant and control asked for."""
    real = {}
    for case in M.CASES:
        if case.subject.kind == "mutant":
            key = (case.subject.command, case.subject.name, case.dtype)
            where, _ = M.real_error(case)
            real[key] = real.get(key, False) or bool(where)
    assert real and all(real.values()), [k for k, v in real.items() if not v]
    names = {(s.command, s.name) for s in M.SUBJECTS}
    assert {("forward", n) for n in ("no_max_shift", "divide_by_max", "rolled",
                                      "float32_accumulation", "wrong_axis", "stable_softmax",
                                      "divfree_softmax", "sequential_16bit", "flush_to_zero",
                                      "torch_style_softmax", "shifted_divfree_softmax",
                                      "online_softmax", "float32_then_round",
                                      "pairwise_16bit")} <= names
    assert {("log_softmax", "log_of_softmax"), ("log_softmax", "log_softmax_lse"),
            ("log_softmax", "shifted_log_softmax"),
            ("jacobian", "jac_no_diagonal"), ("jacobian", "jac_sign_error"),
            ("jacobian", "jac_textbook"), ("jacobian", "jac_unshifted"),
            ("log_jacobian", "logjac_transposed"),
            ("log_jacobian", "logjac"), ("vjp", "vjp_plus"), ("vjp", "vjp_no_s"),
            ("vjp", "vjp_mean_v"), ("vjp", "vjp"), ("vjp", "vjp_unshifted"),
            ("loss", "grad_neg_z_over_t"), ("loss", "grad_t_over_z"),
            ("loss", "loss_grad")} <= names
    kinds = {(s.command, s.name): s.kind for s in M.SUBJECTS}
    # the x - logsumexp(x) family is wrong (its error grows with |x|), not a control
    assert kinds[("forward", "divfree_softmax")] == kinds[("log_softmax", "log_softmax_lse")] \
        == "mutant"


def test_criterion_sees_known_cases():
    """The real-error criterion itself: no-shift is right to rounding on randn but wrong at the
    shifted inputs; dividing by the max is right on a saturated input; -z/t is right when t = z;
    the x - logsumexp family is wrong at |x| = 1e8 but right to rounding where |x| is small;
    the 16-bit sequential sum is wrong where it stalls, not on 16 entries."""
    def case(command, name, inp, dtype="float64"):
        s = next(s for s in M.SUBJECTS if s.command == command and s.name == name)
        i = next(i for i in M.INPUTS[command] if i.name == inp)
        return M.Case(s, i, dtype)

    where, _ = M.real_error(case("forward", "no_max_shift", "randn-n16"))
    assert where == ["x+c(over)", "x+c(under)"]
    assert M.real_error(case("forward", "no_max_shift", "preset:overflow"))[0][0] == "x"
    assert M.real_error(case("forward", "divide_by_max", "preset:one-hot"))[0] == []
    assert M.real_error(case("forward", "rolled", "preset:uniform"))[0] == []
    # t = z at x itself; at the shifted x + c, z moves by the rounding of x + c, t does not
    assert "x" not in M.real_error(case("loss", "grad_neg_z_over_t", "t-equals-z-n8"))[0]
    assert M.real_error(case("vjp", "vjp_mean_v", "preset:uniform"))[0] == []
    assert M.real_error(case("jacobian", "jac_sign_error", "preset:single"))[0] == []
    assert M.real_error(case("log_softmax", "log_softmax_lse", "equal-1e8", "float32"))[0][0] == "x"
    assert "x" not in M.real_error(case("log_softmax", "log_softmax_lse", "randn-n16"))[0]
    assert M.real_error(case("forward", "sequential_16bit", "uniform-n512", "bfloat16"))[0][0] \
        == "x"
    assert M.real_error(case("forward", "sequential_16bit", "randn-n16", "bfloat16"))[0] == []
