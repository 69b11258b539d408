"""HiPPO: online function approximation and orthogonal SSMs (thesis ch. 4-6, app. D-F).

Public API
----------
``MEASURES``                          names accepted by :func:`transition` / :func:`basis`.
``transition(measure, N, theta, **p)``  ``(A, B)`` float64, SSM sign ``x' = Ax + Bu``.
``basis(measure, N, t, kind=...)``      closed-form kernel / reconstruction basis, shape ``(N, *t.shape)``.
``weight(measure, t)``                  the measure density.
``nplr / dplr / diagonal_init``          NPLR, conjugate-half DPLR and S4D-LegS forms.
``HiPPO``                               online projection module (+ ``reconstruct``).
``HiPPOCell / HiPPORNN / HiPPOMemory``   HiPPO-RNN (§4.4): gated cell with a frozen LegS/LegT/LMU/LagT memory.
``legs_eigenvectors / legs_tilde``       Lemma 6.6 instability demo.
``scale / shift / conjugate``            TO-SSM closure operations (§5.4).
"""

from .basis import BASIS_KINDS, basis, weight
from .closure import conjugate, scale, shift
from .eigen import legs_eigenvectors, legs_eigenvectors_exact, legs_tilde, legs_tilde_exact
from .forms import DIAGONAL_INIT_MEASURES, NPLR_MEASURES, diagonal_init, dplr, low_rank, nplr
from .legs_fast import legs_matvec, legs_solve, legs_step_dense, legs_step_fast, linear_recurrence
from .measures import MEASURES, transition
from .online import DISCRETIZATIONS, LSI_MEASURES, MODES, HiPPO, discretize
from .rnn import CELL_MEMORIES, CELL_TYPES, HiPPOCell, HiPPOMemory, HiPPORNN, HiPPOState

__all__ = [
    "MEASURES",
    "NPLR_MEASURES",
    "DIAGONAL_INIT_MEASURES",
    "LSI_MEASURES",
    "MODES",
    "DISCRETIZATIONS",
    "BASIS_KINDS",
    "transition",
    "basis",
    "weight",
    "nplr",
    "dplr",
    "low_rank",
    "diagonal_init",
    "HiPPO",
    "discretize",
    "CELL_MEMORIES",
    "CELL_TYPES",
    "HiPPOCell",
    "HiPPOMemory",
    "HiPPORNN",
    "HiPPOState",
    "legs_eigenvectors",
    "legs_eigenvectors_exact",
    "legs_tilde",
    "legs_tilde_exact",
    "scale",
    "shift",
    "conjugate",
    "linear_recurrence",
    "legs_matvec",
    "legs_solve",
    "legs_step_fast",
    "legs_step_dense",
]
