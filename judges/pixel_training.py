"""Training a judge that sees the pixels: a ``CompositeVLM`` fine-tuned in two stages, LLaVA-style.

Stage 1 (``task="caption"``) aligns the image encoder and projector with the LM: the model learns
to describe each render of the critique set from its pixels (the world's scene caption is the
target, never an input). Stage 2 teaches the judge, in one of two forms:

- ``task="describe_then_judge"`` (the quick start): the judge pass of ``judges.describe_first``.
  The request holds the prompt and a description of the image as the response, no image; the answer
  restates it in the prompt's terms (the seen line), names the problem and scores it. The training
  description is the world's caption; at test time it is the judge's own first-pass description.
  A share of the examples (``caption_replay``) also gives its caption item, so the first pass keeps
  its words.
- ``task="critique"`` (one pass): the request holds the prompt and the image, and the answer first
  describes the image in the model's own words, then goes on as above::

      Image: three blue circles. Quality: clean. Seen: three blue (not red) circles. Critique: ...
      Score: 2

Loss is on the answer tokens only (``JudgeSFTModule``'s rule). ``PixelJudgeSFTModule.export``
writes a model folder (``mmreward.load``, and ``judges.composite_backend.CompositeBackend`` for
judging).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from judges.base import user_request
from judges.critique import critique_request
from judges.critique_data import CritiqueExample, CritiqueWorld, read_examples
from judges.describe_first import DESCRIBE_REQUEST
from judges.tiny import TinyJudgeLM
from mmreward.configurable import Configurable
from mmreward.heads import LinearHead
from mmreward.metrics import correlations
from mmreward.models import RewardModel
from mmreward.training import OptimizerCallable, SchedulerCallable
from mmreward.types import Sample
from modalities.backbones.composite import ClipResNetEncoder, ClipVisionEncoder, CompositeVLM

Task = Literal["caption", "critique", "describe_then_judge"]


def _adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)


def pixel_sample(example: CritiqueExample, root: str | Path, image: str | None = None) -> Sample:
    """The judge's input for ``example``: its prompt and its render (no description, no response).

    Args:
        example: A critique example with an ``image`` path.
        root: The folder the image path is relative to.
        image: Another image path (relative to ``root``) to put in its place (the shuffled control).
    """
    path = image or example.image
    if path is None:
        raise ValueError(
            f"Critique example {example.id} has no image; write the set with CritiqueWorld(images=[...split...])."
        )
    return Sample(prompt=example.prompt, image=str(Path(root) / path), meta={"id": example.id})


def pixel_target(example: CritiqueExample, describe_first: bool = True) -> str:
    """The stage-2 answer: the image described (when ``describe_first``), then the text judge's target."""
    return (f"Image: {example.description} " if describe_first else "") + example.target


def answer_ids(tokenizer: Any, target: str, critique: str | None = None) -> tuple[list[int], int]:
    """The answer's token ids, end of sequence last, and how many of them spell ``critique``.

    With a ``critique`` (a prefix of ``target``), that prefix and the rest are tokenized apart, so the
    critique's tokens are the ones a reward model reads when it scores the critique alone.

    Raises:
        ValueError: ``critique`` does not start ``target``.
    """
    if critique is None:
        return tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id], 0
    if not target.startswith(critique):
        raise ValueError(f"The critique {critique!r} must start the target {target!r}.")
    head = tokenizer(critique, add_special_tokens=False)["input_ids"]
    rest = (
        tokenizer(target[len(critique) :], add_special_tokens=False)["input_ids"]
        if target != critique
        else []
    )
    return head + rest + [tokenizer.eos_token_id], len(head)


class PixelJudgeDataModule(L.LightningDataModule):
    """Batches of ``{"request", "target", "score", "id"}`` whose requests carry the render, not its caption.

    Args:
        synthetic: A ``CritiqueWorld`` (with ``images`` naming every split) to write the set from.
        task: ``"caption"`` (stage 1) or ``"critique"`` (stage 2).
        data_root: Where the set is written (default: ``<trainer.default_root_dir>/data``); an
            existing set there is reused.
        describe_first: Stage-2 answers open with the judge's own description of the image.
        batch_size: Examples per batch.
        caption_replay: For ``describe_then_judge``: the share of examples that also give their
            caption item (the description pass keeps its words while the judge pass is learned).
    """

    def __init__(
        self,
        synthetic: CritiqueWorld,
        task: Task = "critique",
        data_root: str | None = None,
        describe_first: bool = True,
        batch_size: int = 32,
        caption_replay: float = 0.25,
    ) -> None:
        super().__init__()
        self.synthetic, self.task, self.data_root = synthetic, task, data_root
        self.describe_first, self.batch_size, self.caption_replay = describe_first, batch_size, caption_replay
        self.examples: dict[str, list[CritiqueExample]] = {}
        self.root: Path | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.examples:
            return
        root = self.data_root or (
            Path(self.trainer.default_root_dir) / "data" if self.trainer else tempfile.mkdtemp()
        )
        self.root = Path(root)
        if not (self.root / "test.jsonl").is_file():
            self.synthetic.write(self.root)
        self.examples = {s: read_examples(self.root / f"{s}.jsonl") for s in ("train", "val", "test")}

    def items(self, example: CritiqueExample) -> list[dict[str, Any]]:
        """``example`` as requests and the answers to learn: one, or two for ``describe_then_judge``."""
        sample = pixel_sample(example, self.root)
        caption = {"request": user_request(DESCRIBE_REQUEST, [sample.image]), "target": example.description}
        if self.task == "caption":
            items = [caption]
        elif self.task == "critique":
            items = [
                {"request": critique_request(sample), "target": pixel_target(example, self.describe_first)}
            ]
        else:  # the judge pass reads the description as a text judge reads a response, no image
            judged = {"request": critique_request(example.sample()), "target": example.target}
            replay = random.Random(example.id).random() < self.caption_replay
            items = [caption, judged] if replay else [judged]
        return [{**item, "score": example.score, "id": example.id} for item in items]

    def corpus(self) -> list[str]:
        """Every text the judge reads or writes, with the image placeholder (for a from-scratch vocabulary)."""
        texts = []
        for examples in self.examples.values():
            for e in examples:
                sample = pixel_sample(e, self.root)
                texts += [critique_request(sample)[-1]["content"][-1]["text"], pixel_target(e), e.description]
                texts += [critique_request(e.sample())[-1]["content"], e.target]
        return [*texts, DESCRIBE_REQUEST]

    def _loader(self, split: str, shuffle: bool) -> torch.utils.data.DataLoader:
        items = [item for e in self.examples[split] for item in self.items(e)]
        return torch.utils.data.DataLoader(items, self.batch_size, shuffle=shuffle, collate_fn=list)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("val", False)


class TinyPixelJudge(Configurable):
    """A from-scratch composite judge: a tiny CLIP image tower, an MLP projector and a ``TinyJudgeLM``.

    Built at ``setup`` once the data gives the vocabulary. The tower is a ViT (``ClipVisionEncoder``)
    or, when ``vision_config``'s ``vision_cfg.layers`` lists four stage depths, open_clip's ResNet
    read out as a token grid (``ClipResNetEncoder``).

    Args:
        vision_config: The open_clip model config whose vision tower encodes the image.
        hidden_size: The LM's width.
        num_layers: The LM's decoder layers.
        pooled_grid: Pool the encoder's token grid to this side (None: all tokens).
        read_out: A ResNet tower's stages read as tokens (``ClipResNetEncoder``); unused for a ViT.
        seed: Seed of the initial weights.
    """

    def __init__(
        self,
        vision_config: dict[str, Any],
        hidden_size: int = 64,
        num_layers: int = 2,
        pooled_grid: int | None = None,
        read_out: list[str] = ("layer3",),
        seed: int = 0,
    ) -> None:
        self.vision_config, self.hidden_size, self.num_layers = vision_config, hidden_size, num_layers
        self.pooled_grid, self.read_out, self.seed = pooled_grid, list(read_out), seed

    def build(self, directory: str | Path, corpus: list[str]) -> CompositeVLM:
        """The composite model, its LM and tokenizer written to ``directory``."""
        lm = TinyJudgeLM(self.hidden_size, self.num_layers, seed=self.seed).build(directory, corpus)
        torch.manual_seed(self.seed)
        resnet = isinstance(self.vision_config["vision_cfg"].get("layers"), (list, tuple))
        encoder = (
            ClipResNetEncoder(self.vision_config, self.read_out)
            if resnet
            else ClipVisionEncoder(self.vision_config)
        )
        return CompositeVLM(str(lm), encoder, projector="mlp", pooled_grid=self.pooled_grid)


class PixelJudgeSFTModule(L.LightningModule):
    """SFT of a ``CompositeVLM`` judge on (request with image, answer) pairs, prompt tokens masked.

    Args:
        model: A ``CompositeVLM``, a folder written by ``export`` (stage 2 starts from stage 1's), or
            a ``TinyPixelJudge`` to build from scratch (written to ``<default_root_dir>/base``).
        optimizer: Builds the optimizer from the trainable parameters.
        scheduler: Builds a learning-rate scheduler, stepped every step.
        max_length: Longest training sequence in tokens (longer ones are cut from the right).
    """

    def __init__(
        self,
        model: CompositeVLM | str | TinyPixelJudge,
        optimizer: OptimizerCallable = _adamw,
        scheduler: SchedulerCallable | None = None,
        max_length: int = 512,
    ) -> None:
        super().__init__()
        self.source, self.optimizer_factory, self.scheduler_factory = model, optimizer, scheduler
        self.max_length = max_length
        self.composite: CompositeVLM | None = None
        self._val: list[tuple[float, float]] = []
        self._pixels: dict[str, torch.Tensor] = {}  # each image file decoded once per run
        if isinstance(model, CompositeVLM):
            self.composite = model
        elif isinstance(model, (str, Path)):
            from mmreward.scoring import load

            # mr.load gives an eval-mode model; training starts in train mode (BatchNorm in a ResNet eye
            # must update its statistics), and Lightning keeps the mode it finds
            self.composite = load(model, device="cpu").model.backbone.train()

    def setup(self, stage: str | None = None) -> None:
        if self.composite is None:
            datamodule = self.trainer.datamodule
            datamodule.setup(stage)
            self.composite = self.source.build(
                Path(self.trainer.default_root_dir) / "base", datamodule.corpus()
            )

    def pixels(self, image: Any) -> torch.Tensor:
        """The encoder's input for ``image``; a file is read and decoded on its first use only (the
        renders are 64 px: 10,000 of them hold under 0.5 GB as float32)."""
        if not isinstance(image, (str, Path)):
            return self.composite.encoder.pixels(image)
        key = str(image)
        if key not in self._pixels:
            self._pixels[key] = self.composite.encoder.pixels(image)
        return self._pixels[key]

    def encode(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Token ids (image slots widened), mask, labels (-100 off the answer) and pixels, right-padded.

        An item with a ``"critique"`` (the start of its target that a reward head reads,
        ``judges.critique_rm``) has its answer tokenized as that text, then the rest; ``"critique_end"``
        (only when some item has one) gives the position of its last token, -1 for the others.
        """
        model, rows, pixels, ends = self.composite, [], [], []
        for item in batch:
            prompt = model.chat_text(item["request"], add_generation_prompt=True)
            prompt_ids = model.expand(model.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            answer, head = answer_ids(model.tokenizer, item["target"], item.get("critique"))
            rows.append(
                (
                    (prompt_ids + answer)[: self.max_length],
                    ([-100] * len(prompt_ids) + answer)[: self.max_length],
                )
            )
            ends.append(min(len(prompt_ids) + head, self.max_length) - 1 if head else -1)
            content = item["request"][-1]["content"]
            pixels += [
                self.pixels(p["image"]) for p in content if isinstance(p, dict) and p.get("type") == "image"
            ]
        width, pad = max(len(ids) for ids, _ in rows), model.tokenizer.pad_token_id
        out = {
            "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
            "labels": torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows]),
            "pixel_values": model._stack(pixels),
        }
        if any(end >= 0 for end in ends):
            out["critique_end"] = torch.tensor(ends)
        return {k: v.to(self.device) for k, v in out.items()}

    def training_step(self, batch: list[dict[str, Any]], batch_idx: int) -> torch.Tensor:
        inputs = self.encode(batch)
        loss = self.composite.run(inputs, labels=inputs.pop("labels")).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        inputs = self.encode(batch)
        labels = inputs.pop("labels")
        out = self.composite.run(inputs, labels=labels)
        self.log("val/loss", out.loss, prog_bar=True, batch_size=len(batch))
        ids = [self.composite.tokenizer.convert_tokens_to_ids(f" {v}") for v in range(1, 6)]
        values = torch.arange(1, 6, dtype=torch.float32, device=self.device)
        for row, item in enumerate(batch):  # the score digit is the last answer token before the end of turn
            answer = (labels[row] != -100).nonzero().flatten()
            if len(answer) >= 2 and item["target"].rstrip()[-1].isdigit():
                probs = out.logits[row, int(answer[-2]) - 1, ids].float().softmax(-1)
                self._val.append((float((probs * values).sum()), item["score"]))

    def on_validation_epoch_end(self) -> None:
        pairs = np.array(self._val) if self._val else np.zeros((0, 2))
        self._val = []
        spearman = correlations(pairs[:, 0], pairs[:, 1])["spearman"] if len(pairs) else float("nan")
        self.log("val/metric", float(np.nan_to_num(spearman, nan=-1.0)), prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory([p for p in self.composite.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"},
        }

    def export(self, directory: str | Path) -> Path:
        """Write the judge as a model folder (``mmreward.load``; ``CompositeBackend`` judges with it).

        The folder holds a ``RewardModel`` whose backbone is the judge; its linear head is untrained
        here (a scalar-reward stage trains it).
        """
        from mmreward.scoring import save_pretrained

        return save_pretrained(RewardModel(self.composite, LinearHead(), name="pixel-judge"), directory)
