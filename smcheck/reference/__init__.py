"""The exact references: result types (:mod:`.exact`), the mpmath engine (:mod:`.mp`), the
double-double engine and float64 tier (:mod:`.dd`), the one choice between them
(:mod:`.dispatch`), and the check of a reference against more digits (:mod:`.verify`)."""

from .dd import dd_mul_finite, exact_jacobian, exact_loss_grad
from .dispatch import (AUTO_DD_MIN, ENGINES, choose_engine, exact_bilinear, exact_grad_x,
                       exact_loss_value, exact_softmax, exact_vjp, forward_engine, shifted_softmax,
                       shifted_vjp, use_dd)
from .exact import ExactSoftmax, ExactVJP

__all__ = ["AUTO_DD_MIN", "ENGINES", "ExactSoftmax", "ExactVJP", "choose_engine", "dd_mul_finite",
           "exact_bilinear", "exact_grad_x", "exact_jacobian", "exact_loss_grad",
           "exact_loss_value", "exact_softmax", "exact_vjp", "forward_engine", "shifted_softmax",
           "shifted_vjp", "use_dd"]
