"""Supervised fine-tuning of a generative judge with Lightning: the loss is on the judge's answer only.

``JudgeSFTModule`` trains a causal LM on (request, answer) pairs: the prompt tokens (the chat
request, rendered by the model's chat template exactly as at inference) are masked out of the
loss, so only the critique and score tokens are learned. ``JudgeDataModule`` feeds it from
``CritiqueWorld`` JSONL files (or builds them from a synthetic world). Validation logs the loss
and ``val/metric``: the Spearman correlation, with the ground-truth ratings, of the expected
score read at the score token with the reference critique teacher-forced (one forward pass).

``mmreward fit --config configs/composite/ablation_scene_text_judge.yaml`` trains the scene-text judge
(an ablation; the quick start is the pixel judge of ``judges.pixel_training``); fit ends by
calling ``export(directory)``, which writes a ``from_pretrained`` folder for ``TransformersBackend``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from judges.critique import critique_request
from judges.critique_data import CritiqueExample, CritiqueWorld, read_examples
from judges.tiny import TinyJudgeLM
from mmreward.metrics import correlations
from mmreward.optional import require
from mmreward.training import OptimizerCallable, SchedulerCallable


def _adamw(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)


class JudgeDataModule(L.LightningDataModule):
    """Judge SFT data: batches of ``{"request", "target", "score", "id"}`` dicts.

    Args:
        train: A ``CritiqueWorld`` JSONL file for training (or None with ``synthetic``).
        val: Likewise for validation.
        test: Likewise for testing.
        synthetic: A ``CritiqueWorld`` to write the three splits from.
        data_root: Where ``synthetic`` writes (default: ``<trainer.default_root_dir>/data``).
        template: The judge template (None: ``judges/templates/critique.txt``); use the same at inference.
        batch_size: Examples per training batch.
        num_workers: Data-loader workers.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        synthetic: CritiqueWorld | None = None,
        data_root: str | None = None,
        template: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if synthetic is None and train is None:
            raise ValueError(
                "JudgeDataModule got neither train nor synthetic; pass --data.train FILE.jsonl or a synthetic world."
            )
        self.files = {"train": train, "val": val, "test": test}
        self.synthetic, self.data_root, self.template = synthetic, data_root, template
        self.batch_size, self.num_workers = batch_size, num_workers
        self.examples: dict[str, list[CritiqueExample]] = {}

    def setup(self, stage: str | None = None) -> None:
        """Write the synthetic splits when asked, then read every split."""
        if self.examples:
            return
        files = dict(self.files)
        if self.synthetic is not None:
            root = self.data_root or (
                Path(self.trainer.default_root_dir) / "data" if self.trainer else tempfile.mkdtemp()
            )
            files = {k: str(v) for k, v in self.synthetic.write(root).items()}
        self.examples = {split: read_examples(path) for split, path in files.items() if path is not None}

    def items(self, split: str) -> list[dict[str, Any]]:
        """The examples of ``split`` as chat requests with targets."""
        return [
            {
                "request": critique_request(e.sample(), self.template),
                "target": e.target,
                "score": e.score,
                "id": e.id,
            }
            for e in self.examples.get(split, [])
        ]

    def corpus(self) -> list[str]:
        """Every text the judge will read or write (for a from-scratch vocabulary)."""
        texts = []
        for split in self.examples:
            for item in self.items(split):
                texts += [m["content"] for m in item["request"] if isinstance(m["content"], str)] + [
                    item["target"]
                ]
        return texts

    def _loader(self, split: str, shuffle: bool) -> torch.utils.data.DataLoader:
        items = self.items(split)
        return torch.utils.data.DataLoader(
            items, self.batch_size, shuffle=shuffle, num_workers=self.num_workers, collate_fn=list
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("test", False)


class JudgeSFTModule(L.LightningModule):
    """Fine-tune a causal LM judge on its answers (critique + score), prompt tokens masked.

    Args:
        model: A ``from_pretrained`` folder or hub id, or a ``TinyJudgeLM`` to build from scratch
            (its vocabulary read off the data module's texts; written to ``<default_root_dir>/base``).
        optimizer: Builds the optimizer from the parameters (default AdamW, lr 2e-3, for tiny models).
        scheduler: Builds a learning-rate scheduler from the optimizer, stepped every step.
        min_score: Lowest score label (for the validation metric).
        max_score: Highest score label.
        max_length: Longest training sequence in tokens (longer ones are cut from the right).
    """

    def __init__(
        self,
        model: str | TinyJudgeLM,
        optimizer: OptimizerCallable = _adamw,
        scheduler: SchedulerCallable | None = None,
        min_score: int = 1,
        max_score: int = 5,
        max_length: int = 512,
    ) -> None:
        super().__init__()
        self.source, self.optimizer_factory, self.scheduler_factory = model, optimizer, scheduler
        self.min_score, self.max_score, self.max_length = min_score, max_score, max_length
        self.model: Any = None
        self.tokenizer: Any = None
        self._val: list[tuple[float, float]] = []
        if isinstance(model, str):
            self._load(model)

    def _load(self, path: str | Path) -> None:
        transformers = require("transformers", "vlm")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        self.model.train()  # from_pretrained returns it in eval mode
        self.score_ids = [
            self.tokenizer.convert_tokens_to_ids(f" {v}") for v in range(self.min_score, self.max_score + 1)
        ]

    def setup(self, stage: str | None = None) -> None:
        """Build the from-scratch model once the data module can give its vocabulary."""
        if self.model is None:
            datamodule = self.trainer.datamodule
            datamodule.setup(stage)
            self._load(self.source.build(Path(self.trainer.default_root_dir) / "base", datamodule.corpus()))

    def encode(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Token ids, attention mask and labels (-100 on the prompt and padding), right-padded."""
        rows = []
        for item in batch:
            prompt = self.tokenizer.apply_chat_template(
                item["request"], tokenize=False, add_generation_prompt=True
            )
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answer_ids = self.tokenizer(item["target"], add_special_tokens=False)["input_ids"] + [
                self.tokenizer.eos_token_id
            ]
            ids = (prompt_ids + answer_ids)[: self.max_length]
            rows.append((ids, ([-100] * len(prompt_ids) + answer_ids)[: self.max_length]))
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
        return {
            "input_ids": input_ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "labels": labels.to(self.device),
        }

    def training_step(self, batch: list[dict[str, Any]], batch_idx: int) -> torch.Tensor:
        loss = self.model(**self.encode(batch)).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        inputs = self.encode(batch)
        out = self.model(**inputs)
        self.log("val/loss", out.loss, prog_bar=True, batch_size=len(batch))
        values = torch.arange(self.min_score, self.max_score + 1, dtype=torch.float32, device=self.device)
        for row, item in enumerate(batch):  # the score digit is the last answer token before the end of turn
            answer = (inputs["labels"][row] != -100).nonzero().flatten()
            if len(answer) >= 2:
                position = int(answer[-2]) - 1  # logits at t predict token t + 1
                probs = out.logits[row, position, self.score_ids].float().softmax(-1)
                self._val.append((float((probs * values).sum()), item["score"]))

    def on_validation_epoch_end(self) -> None:
        pairs = np.array(self._val) if self._val else np.zeros((0, 2))
        self._val = []
        spearman = correlations(pairs[:, 0], pairs[:, 1])["spearman"] if len(pairs) else float("nan")
        self.log("val/metric", float(np.nan_to_num(spearman, nan=-1.0)), prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"},
        }

    def export(self, directory: str | Path) -> Path:
        """Write the fine-tuned model and its tokenizer to ``directory`` (``from_pretrained`` loads it)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return directory
