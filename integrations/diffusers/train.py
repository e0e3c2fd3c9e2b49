"""Command line: fine-tune a diffusers pipeline on mmreward rewards.

``python -m integrations.diffusers.train --config configs/diffusers/tiny_draft.yaml``

The config names the pipeline folder (or hub id), the rewards (saved mmreward models or reward
models given by ``class_path``), the method (``draft``: reward backpropagation, ``ddpo``: policy
gradient, ``dpo``: Diffusion-DPO on reward-labelled pairs) and its settings. The run writes
``OUTPUT/log.jsonl`` as it goes (one line a step), ``OUTPUT/lora/`` (diffusers' LoRA format) and
``OUTPUT/metrics.json`` (mean reward on the evaluation prompts before and after).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from integrations.diffusers.adapters import TrainSettings, cycled_prompts
from integrations.diffusers.backprop import BackpropConfig, RewardBackpropTrainer
from integrations.diffusers.dpo import DiffusionDPOTrainer, DPOConfig, label_pairs
from integrations.diffusers.evaluation import mean_reward
from integrations.diffusers.policy_gradient import PolicyGradientConfig, PolicyGradientTrainer
from integrations.diffusers.reward import MultiReward, RewardFn
from mmreward.configurable import instantiate
from mmreward.optional import require


@dataclass
class RewardSpec:
    """One reward of the mix.

    Attributes:
        model: A saved mmreward model folder (``mmreward.load``), or a reward model as
            ``{"class_path": ..., "init_args": ...}``.
        weight: Its weight in the sum.
        transform: A reward transform as ``{"class_path": ..., "init_args": ...}``
            (``mmreward.transforms``); None keeps the saved model's own transform.
    """

    model: str | dict[str, Any]
    weight: float = 1.0
    transform: dict[str, Any] | None = None


def build_reward(specs: dict[str, RewardSpec]) -> MultiReward:
    """A ``MultiReward`` from the config's reward specs."""
    import mmreward

    rewards = {}
    for name, spec in specs.items():
        source = mmreward.load(spec.model) if isinstance(spec.model, str) else instantiate(spec.model)
        transform = None if spec.transform is None else instantiate(spec.transform)
        rewards[name] = RewardFn(source, transform=transform)
    return MultiReward(rewards, {name: spec.weight for name, spec in specs.items()})


def _run_method(
    pipe: Any, reward: MultiReward, method: str, prompts: list[str], steps: int, cfg: dict[str, Any], log: Any
) -> Any:
    """Train with the chosen method; write each step's logs as a JSON line; return the trainer."""
    settings, pairs, size = cfg["settings"], None, 0
    if method == "draft":
        trainer, size = RewardBackpropTrainer(pipe, reward, cfg["draft"], settings), cfg["draft"].batch_size
    elif method == "ddpo":
        trainer, size = (
            PolicyGradientTrainer(pipe, reward, cfg["ddpo"], settings),
            cfg["ddpo"].prompts_per_step,
        )
    else:
        pairs = label_pairs(pipe, prompts, reward, cfg["dpo"], seed=settings.seed)
        trainer = DiffusionDPOTrainer(pipe, cfg["dpo"], settings)
    for i in range(steps):
        if pairs is not None:
            logs = trainer.train(pairs, 1)[0]
        else:
            logs = trainer.step(cycled_prompts(prompts, i, size))
        log.write(json.dumps({"step": i, **logs}) + "\n")
        log.flush()
    return trainer


def train(
    pipeline: str,
    rewards: dict[str, RewardSpec],
    prompts: list[str],
    method: Literal["draft", "ddpo", "dpo"] = "draft",
    eval_prompts: list[str] | None = None,
    steps: int = 100,
    output: str = "runs/diffusers",
    draft: BackpropConfig | None = None,
    ddpo: PolicyGradientConfig | None = None,
    dpo: DPOConfig | None = None,
    settings: TrainSettings | None = None,
) -> dict[str, Any]:
    """Fine-tune ``pipeline``'s denoiser (LoRA) on ``rewards`` and save the adapter.

    Args:
        pipeline: A ``StableDiffusionPipeline`` folder or hub id.
        rewards: Named rewards and their weights (logged one by one).
        prompts: Training prompts.
        method: ``draft`` (reward backpropagation), ``ddpo`` (policy gradient) or ``dpo``.
        eval_prompts: Held-out prompts for the before/after reward; None skips the evaluation.
        steps: Optimisation steps.
        output: Folder for ``log.jsonl``, ``lora/`` and ``metrics.json``.
        draft: Settings of reward backpropagation (None: the paper defaults).
        ddpo: Settings of the policy gradient (None: the paper defaults).
        dpo: Settings of Diffusion-DPO (None: the paper defaults).
        settings: Optimiser, LoRA and accelerate settings (None: the defaults).

    Returns:
        The metrics written to ``metrics.json``.
    """
    configs = {
        "draft": draft or BackpropConfig(),
        "ddpo": ddpo or PolicyGradientConfig(),
        "dpo": dpo or DPOConfig(),
    }
    configs["settings"] = settings or TrainSettings()
    diffusers = require("diffusers", "diffusers")
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(pipeline)
    pipe.set_progress_bar_config(disable=True)
    reward = build_reward(rewards)
    sampling = configs[method]
    evaluate = (
        (
            lambda: mean_reward(
                pipe, reward, eval_prompts, sampling.num_inference_steps, sampling.guidance_scale
            )
        )
        if eval_prompts
        else None
    )
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"method": method, "steps": steps}
    if evaluate:
        metrics["reward_before"] = evaluate()
    with open(out / "log.jsonl", "w") as log:
        trainer = _run_method(pipe, reward, method, prompts, steps, configs, log)
    trainer.save_lora(str(out / "lora"))
    if evaluate:
        metrics["reward_after"] = evaluate()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(args: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line (jsonargparse; ``--config FILE`` and ``--key value`` overrides) and train."""
    jsonargparse = require("jsonargparse", "diffusers")
    return jsonargparse.CLI(train, args=args, as_positional=False)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
