"""The built-in implementations: ``stable``, ``naive``, ``divfree`` (:mod:`.formulas`)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Implementation
from .formulas import (_BUILTINS, builtin_jacobian, builtin_loss_grad, builtin_vjp,
                       exact_formula)


@dataclass
class Builtin(Implementation):
    name: str
    thread_safe = True
    fork_safe = True
    honours_dtype = True
    grad_x_from_softmax = True

    def softmax(self, X, info, log=False):
        return _BUILTINS[self.name](X, info, log)

    def jacobian(self, X, info, log=False):
        return builtin_jacobian(self.name, X, info, log)

    def vjp(self, X, V, info):
        return builtin_vjp(self.name, X, V, info)

    def loss_grad(self, Z, T, info):
        return builtin_loss_grad(Z, T, info)

    def forward64(self, log=False):
        return exact_formula(self.name, log)

    @property
    def fd_source(self) -> str:
        return f"the {self.name} formula in float64 (complex128 for the complex step)"
