"""The derivative commands' checks, one module each (:mod:`smcheck.jacobian_checks`,
:mod:`smcheck.vjp_checks`, :mod:`smcheck.loss_checks`); importing this module registers them
all in :data:`smcheck.checks.REGISTRY` (and their merge hooks)."""

from .deriv_common import fsum_rows, row_rng
from .jacobian_checks import JacobianCase
from .loss_checks import LossCase
from .vjp_checks import VjpCase

__all__ = ["JacobianCase", "VjpCase", "LossCase", "fsum_rows", "row_rng"]
