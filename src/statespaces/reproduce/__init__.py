"""Re-run the thesis' claims: ``statespaces reproduce [IDS] [--quick]`` writes ``REPRODUCTION.md``.

Tier A (exact algorithms and theory, seconds) runs in the quick profile and in CI; tiers B/C
(training) run in the full profile. See :mod:`statespaces.reproduce.registry`.
"""
# import order = registration order of CLAIMS (hence not sorted: I001)
from . import claims_hippo, claims_speed, claims_theory, claims_training  # noqa: F401, I001  (register the claims)
from . import claims_ablations, claims_linoss, claims_robustness  # noqa: F401  (C2, C3, C5, C6, L1, L2)
from . import claims_efficiency, claims_models, claims_synthetic  # noqa: F401  (A6, B1, B2, C7, C8)
from .registry import CLAIMS, Result, run_claims

__all__ = ["CLAIMS", "Result", "run_claims"]
