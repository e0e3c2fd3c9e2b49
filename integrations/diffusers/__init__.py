"""mmreward rewards in diffusers pipelines: fine-tuning, guided sampling and best-of-N.

```python
from integrations.diffusers import RewardFn, RewardBackpropTrainer, best_of_n
reward = RewardFn(mmreward.load("runs/t2i/model"))
best = best_of_n(pipe, ["a red cube"], reward, n=8)
```

Importing this package needs no optional dependency; diffusers, peft and accelerate are imported
where they are used (``pip install 'mmreward[diffusers]'``).
"""

from integrations.diffusers.adapters import LoraSettings, TrainSettings, save_lora
from integrations.diffusers.backprop import BackpropConfig, RewardBackpropTrainer
from integrations.diffusers.best_of_n import BestOfNResult, EarlyRejection, Stage, best_of_n
from integrations.diffusers.dpo import DiffusionDPOTrainer, DPOConfig, PreferencePairs, label_pairs
from integrations.diffusers.guidance import RewardGuidance
from integrations.diffusers.policy_gradient import (
    PolicyGradientConfig,
    PolicyGradientTrainer,
    group_advantages,
)
from integrations.diffusers.reward import MultiReward, RewardBatch, RewardFn

__all__ = [
    "BackpropConfig",
    "BestOfNResult",
    "DPOConfig",
    "DiffusionDPOTrainer",
    "EarlyRejection",
    "LoraSettings",
    "MultiReward",
    "PolicyGradientConfig",
    "PolicyGradientTrainer",
    "PreferencePairs",
    "RewardBackpropTrainer",
    "RewardBatch",
    "RewardFn",
    "RewardGuidance",
    "Stage",
    "TrainSettings",
    "best_of_n",
    "group_advantages",
    "label_pairs",
    "save_lora",
]
