"""Reward-guided selection and search, for any generator and any reward (``mmreward.protocols.Reward``).

| method | function | module |
|---|---|---|
| best-of-N by outcome score, PRM aggregate (min, last, mean, product) or LCB | ``best_of_n`` | ``best_of_n`` |
| majority and PRM-weighted voting over extracted answers | ``majority_vote``, ``weighted_vote`` | ``voting`` |
| cheap rewards filter, an expensive one ranks | ``cascade``, ``Stage`` | ``cascade`` |
| step-by-step best-of-N, with early rejection of partial chains | ``sample_best_of_n``, ``EarlyRejection`` | ``early_rejection`` |
| step-level beam search | ``beam_search`` | ``beam`` |
| refined best-of-N from the first wrong step's correction | ``refined_best_of_n`` | ``refine`` |

The selection rules they share (``selection_values``, ``top_k_mask``, ...) are in ``selection``;
the step-generator contract (``Step``, ``StepGenerator``) and search statistics in ``chains``.
``integrations.diffusers.best_of_n`` selects diffusion samples with the same rules.
"""

from integrations.search.beam import beam_search
from integrations.search.best_of_n import Pick, best_of_n
from integrations.search.cascade import Stage, cascade
from integrations.search.chains import Chain, SearchResult, SearchStats, Step, StepGenerator, total_stats
from integrations.search.early_rejection import EarlyRejection, sample_best_of_n
from integrations.search.refine import first_wrong_step, refined_best_of_n
from integrations.search.selection import Selection, candidate_values, selection_values, top_k_mask
from integrations.search.voting import Vote, majority_vote, weighted_vote

__all__ = [
    "Chain",
    "EarlyRejection",
    "Pick",
    "SearchResult",
    "SearchStats",
    "Selection",
    "Stage",
    "Step",
    "StepGenerator",
    "Vote",
    "beam_search",
    "best_of_n",
    "candidate_values",
    "cascade",
    "first_wrong_step",
    "majority_vote",
    "refined_best_of_n",
    "sample_best_of_n",
    "selection_values",
    "top_k_mask",
    "total_stats",
    "weighted_vote",
]
