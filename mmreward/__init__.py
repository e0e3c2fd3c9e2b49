"""mmreward: multimodal reward and judge models.

```python
import mmreward as mr
scorer = mr.load("runs/t2i-quickstart/model")
scorer.score(prompts=["two red circles"], images=["a.png"])
```
"""

from mmreward.configurable import Configurable
from mmreward.heads import LinearHead, MLPHead, MultiAspectHead
from mmreward.losses import RewardLoss
from mmreward.models import RewardModel
from mmreward.protocols import Reward
from mmreward.scoring import Scorer, load
from mmreward.types import Candidate, HeadOutput, Preference, Ranking, Rating, RewardOutput, Sample

__version__ = "0.1.0"

__all__ = [
    "Candidate",
    "Configurable",
    "HeadOutput",
    "LinearHead",
    "MLPHead",
    "MultiAspectHead",
    "Preference",
    "Ranking",
    "Rating",
    "Reward",
    "RewardLoss",
    "RewardModel",
    "RewardOutput",
    "Sample",
    "Scorer",
    "load",
]
