"""mmreward rewards as TRL reward functions (``GRPOTrainer(reward_funcs=...)``); see docs/trl.md.

This package imports nothing from TRL: the functions follow TRL's calling convention, so they need
TRL only where the trainer runs (``pip install 'mmreward[trl]'``).
"""

from integrations.trl.reward_funcs import AsyncRewardFunc, RewardFunc, samples_from_rows

__all__ = ["AsyncRewardFunc", "RewardFunc", "samples_from_rows"]
