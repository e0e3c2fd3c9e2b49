"""Training the critique reward model (``judges.critique_rm``): SFT on critiques plus Bradley-Terry on a head.

It starts from a trained two-pass pixel judge (``judges.pixel_training``, the quick start's model
folder) and goes on with its judge pass, now with a scalar head. Each batch holds every candidate of
a few prompts of the critique set, as the judge pass sees them: the request with the prompt and the
world's caption of the render as the description, the answer with the seen line, the critique and
the score line. The loss is

    SFT (the answer tokens, as the judge learned them) + ``bt_weight`` x Bradley-Terry,

where the Bradley-Terry term compares the head's scores, read at each critique's last token, over
every pair of one prompt's candidates whose world ratings differ (MM-RLHF's recipe: the critique is
taught by SFT, the score by preference pairs). A share of the examples (``caption_replay``) also
gives its caption item, SFT only, so the description pass keeps its words.

The world's captions and critiques are training targets only: at scoring time the description and
the critique are the model's own, written from the pixels.

Example:
    >>> run = train_critique_rm("runs/judge-quickstart", "runs/critique-rm")   # configs/composite/critique_rm.yaml
    >>> rm = CritiqueRewardModel(run / "model")
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from judges.critique_data import CritiqueExample, CritiqueWorld, critique_hit, names_problem, read_examples
from judges.critique_rm import CritiqueRewardModel, critique_of
from judges.pixel_training import PixelJudgeDataModule, PixelJudgeSFTModule, _adamw, pixel_sample
from mmreward.losses import bradley_terry_loss
from mmreward.metrics import correlations
from mmreward.models import RewardModel
from mmreward.training import OptimizerCallable, SchedulerCallable


def prompt_of(example: CritiqueExample) -> str:
    """The prompt group of an example: its id without the candidate index (``train-00012``)."""
    return example.id.rsplit("-", 1)[0]


def _flatten(groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [item for group in groups for item in group]


class CritiqueRMDataModule(PixelJudgeDataModule):
    """Batches of whole prompt groups: every candidate's judge-pass item (with its critique and
    group), plus the replayed caption items.

    Args:
        synthetic: The ``CritiqueWorld`` to write the set from; None: ``data_root`` must hold one
            already (the judge's own, as ``train_critique_rm`` passes it).
        data_root: Where the set is (or is written).
        prompts_per_batch: Prompt groups per batch (5 candidates each in the t2i world).
        caption_replay: The share of examples that also give their caption item.
    """

    def __init__(
        self,
        synthetic: CritiqueWorld | None = None,
        data_root: str | None = None,
        prompts_per_batch: int = 8,
        caption_replay: float = 0.25,
    ) -> None:
        super().__init__(
            synthetic,
            "describe_then_judge",
            data_root,
            batch_size=prompts_per_batch,
            caption_replay=caption_replay,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.synthetic is None and not (
            self.data_root and (Path(self.data_root) / "test.jsonl").is_file()
        ):
            raise ValueError(
                f"CritiqueRMDataModule has no critique set at data_root={self.data_root!r} and no world to "
                "write one: pass the judge run's data folder, or a CritiqueWorld as synthetic."
            )
        super().setup(stage)

    def items(self, example: CritiqueExample) -> list[dict[str, Any]]:
        items = super().items(example)
        judged = items[-1]  # the judge pass; a replayed caption comes first
        judged["critique"], judged["group"] = critique_of(judged["target"]), prompt_of(example)
        return items

    def _loader(self, split: str, shuffle: bool) -> torch.utils.data.DataLoader:
        groups: dict[str, list[dict[str, Any]]] = {}
        for example in self.examples[split]:
            groups.setdefault(prompt_of(example), []).extend(self.items(example))
        return torch.utils.data.DataLoader(
            list(groups.values()), self.batch_size, shuffle=shuffle, collate_fn=_flatten
        )


def rated_pairs(batch: list[dict[str, Any]], across_prompts: bool = False) -> tuple[list[int], list[int]]:
    """``(better, worse)`` indices among the batch's judge-pass items (in their order): every pair of
    one group whose ratings differ, or of the whole batch with ``across_prompts`` (the world's ratings
    share one scale, so candidates of different prompts compare too)."""
    judged = [item for item in batch if "group" in item]
    better, worse = [], []
    for i, j in itertools.combinations(range(len(judged)), 2):
        a, b = judged[i], judged[j]
        if (across_prompts or a["group"] == b["group"]) and a["score"] != b["score"]:
            hi, lo = (i, j) if a["score"] > b["score"] else (j, i)
            better.append(hi)
            worse.append(lo)
    return better, worse


class CritiqueRMModule(PixelJudgeSFTModule):
    """SFT of the judge pass plus Bradley-Terry on the head's scores at the critiques' ends.

    Args:
        model: A model folder (a ``RewardModel`` on a ``CompositeVLM``: the trained pixel judge) or
            such a ``RewardModel``; its head is the one trained.
        optimizer: Builds the optimizer from the trainable parameters (the model's and the head's).
        scheduler: Builds a learning-rate scheduler, stepped every step.
        bt_weight: Weight of the Bradley-Terry term against the SFT loss.
        across_prompts: Pair candidates of different prompts too (``rated_pairs``): the scores then
            share one scale across prompts, not only within each.
        max_length: Longest training sequence in tokens.
    """

    def __init__(
        self,
        model: RewardModel | str,
        optimizer: OptimizerCallable = _adamw,
        scheduler: SchedulerCallable | None = None,
        bt_weight: float = 1.0,
        across_prompts: bool = False,
        max_length: int = 512,
    ) -> None:
        if isinstance(model, (str, Path)):
            from mmreward.scoring import load

            model = load(model, device="cpu").model.train()  # training mode, as PixelJudgeSFTModule's
        super().__init__(model.backbone, optimizer, scheduler, max_length)
        self.head, self.bt_weight, self.across_prompts = model.head, bt_weight, across_prompts
        self._val_scores: list[tuple[float, float, str]] = []

    def losses(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """``sft``, ``bt`` and ``pair_accuracy`` (of the batch's rated pairs) on one batch."""
        inputs = self.encode(batch)
        labels, ends = inputs.pop("labels"), inputs.pop("critique_end")
        out = self.composite.run(inputs, labels=labels, hidden_states=True)
        rows = (ends >= 0).nonzero().flatten()
        scores = self.head(out.hidden_states[-1][rows, ends[rows]].float()).score
        better, worse = rated_pairs(batch, self.across_prompts)
        if better:
            bt = bradley_terry_loss(scores[better], scores[worse])
            accuracy = (scores[better] > scores[worse]).float().mean()
        else:  # a batch of one-candidate groups: nothing to compare
            bt, accuracy = scores.sum() * 0.0, torch.tensor(float("nan"))
        return {"sft": out.loss, "bt": bt, "pair_accuracy": accuracy, "scores": scores.detach()}

    def training_step(self, batch: list[dict[str, Any]], batch_idx: int) -> torch.Tensor:
        parts = self.losses(batch)
        loss = parts["sft"] + self.bt_weight * parts["bt"]
        for name in ("sft", "bt", "pair_accuracy"):
            self.log(f"train/{name}", parts[name], prog_bar=name != "sft", batch_size=len(batch))
        self.log("train/loss", loss, batch_size=len(batch))
        return loss

    def validation_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        parts = self.losses(batch)
        self.log(
            "val/loss", parts["sft"] + self.bt_weight * parts["bt"], prog_bar=True, batch_size=len(batch)
        )
        judged = [item for item in batch if "group" in item]
        self._val_scores += [(float(s), i["score"], i["group"]) for s, i in zip(parts["scores"], judged)]

    def on_validation_epoch_end(self) -> None:
        scores, self._val_scores = self._val_scores, []
        accuracy = prompt_pair_accuracy(
            np.array([s for s, _, _ in scores]),
            np.array([r for _, r, _ in scores]),
            [g for _, _, g in scores],
        )
        self.log("val/metric", float(np.nan_to_num(accuracy, nan=0.0)), prog_bar=True)

    def configure_optimizers(self) -> Any:
        params = [p for p in [*self.composite.parameters(), *self.head.parameters()] if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"},
        }

    def export(self, directory: str | Path) -> Path:
        """Write the critique reward model (the judge and its trained head) as a model folder."""
        from mmreward.scoring import save_pretrained

        return save_pretrained(RewardModel(self.composite, self.head, name="critique-rm"), directory)


def prompt_pair_accuracy(scores: np.ndarray, ratings: np.ndarray, groups: list[str]) -> float:
    """Share of the pairs of one prompt's candidates with different ratings that ``scores`` order
    alike (a tie in the scores counts half); NaN when there is no such pair."""
    right, total = 0.0, 0
    for i, j in itertools.combinations(range(len(scores)), 2):
        if groups[i] != groups[j] or ratings[i] == ratings[j]:
            continue
        total += 1
        d = (scores[i] - scores[j]) * np.sign(ratings[i] - ratings[j])
        right += 1.0 if d > 0 else 0.5 if d == 0 else 0.0
    return right / total if total else float("nan")


def train_critique_rm(
    judge_run: str | Path,
    run_dir: str | Path,
    steps: int = 400,
    lr: float = 1e-3,
    bt_weight: float = 4.0,
    across_prompts: bool = False,
    prompts_per_batch: int = 8,
    seed: int = 0,
) -> Path:
    """Train the critique reward model from a trained judge; ``run_dir/model`` gets it.

    Args:
        judge_run: A run folder of ``integrations.demos.judge.train_quickstart`` (``model/``, ``data/``).
        run_dir: Where this run writes.
        steps: Optimizer steps (one cycle of the learning rate, 5% warm-up).
        lr: The peak learning rate.
        bt_weight: Weight of the Bradley-Terry term.
        across_prompts: Pair candidates of different prompts too (``CritiqueRMModule``).
        prompts_per_batch: Prompt groups per batch.
        seed: Seeds the batch order and the replay draw's use.
    """
    import lightning as L

    judge_run, run_dir = Path(judge_run), Path(run_dir)
    L.seed_everything(seed, verbose=False)
    module = CritiqueRMModule(
        str(judge_run / "model"),
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01),
        scheduler=lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=steps, pct_start=0.05
        ),
        bt_weight=bt_weight,
        across_prompts=across_prompts,
    )
    data = CritiqueRMDataModule(None, str(judge_run / "data"), prompts_per_batch)  # the judge's own set
    L.Trainer(
        max_steps=steps,
        default_root_dir=str(run_dir),
        limit_val_batches=0,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    ).fit(module, data)
    module.export(run_dir / "model")
    return run_dir


def evaluate_critique_rm(
    rm: CritiqueRewardModel,
    examples: list[CritiqueExample],
    root: str | Path,
    images: list[str] | None = None,
) -> dict[str, Any]:
    """The head's and the score token's figures on ``examples``, judged from their prompts and images.

    Returns:
        ``spearman`` and ``pair_accuracy`` (within each prompt) of the head's scores against the
        world's ratings, the same for the score token (``score_token_*``, unread scores at the
        midpoint 3), the critiques' ``hit_rate`` and ``problem_named_rate`` and the share of unread
        score tokens (``parse_failure_rate``), as ``evaluate_critique_judge`` counts them for a judge,
        ``n``, and the outputs.
    """
    samples = [pixel_sample(e, root, None if images is None else images[i]) for i, e in enumerate(examples)]
    outputs = rm.score_samples(samples)
    ratings = np.array([e.score for e in examples])
    groups = [prompt_of(e) for e in examples]
    head = np.array([o.score for o in outputs])
    token = np.array([(o.aspects or {}).get("score_token", 3.0) for o in outputs])
    return {
        "spearman": correlations(head, ratings)["spearman"],
        "pair_accuracy": prompt_pair_accuracy(head, ratings, groups),
        "score_token_spearman": correlations(token, ratings)["spearman"],
        "score_token_pair_accuracy": prompt_pair_accuracy(token, ratings, groups),
        "hit_rate": float(np.mean([critique_hit(o.text, e.critique) for o, e in zip(outputs, examples)])),
        "problem_named_rate": float(
            np.mean([names_problem(o.text, e.corruption) for o, e in zip(outputs, examples)])
        ),
        "parse_failure_rate": float(np.mean([o.aspects is None for o in outputs])),
        "n": len(examples),
        "outputs": outputs,
    }


def read_split(judge_run: str | Path, split: str = "test") -> list[CritiqueExample]:
    """The examples of a judge run's split (``<run>/data/<split>.jsonl``)."""
    return read_examples(Path(judge_run) / "data" / f"{split}.jsonl")
