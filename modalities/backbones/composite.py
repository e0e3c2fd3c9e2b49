"""``CompositeVLM``: a vision encoder, a projector and any causal LM, joined LLaVA-style.

LLaVA (Liu et al., 2023) builds a vision-language model from parts: an image encoder's patch tokens
go through a projector (linear, or a two-layer MLP in LLaVA-1.5) into the language model's embedding
space and are spliced into the chat text where an ``<image>`` placeholder stands. Here the encoder
is injected (``ClipVisionEncoder``: the open_clip visual tower that ``ClipBackbone`` builds), the LM
is any ``AutoModelForCausalLM`` folder or hub id, and one module serves two roles:

- a reward backbone for ``mmreward.models.RewardModel``: ``collate``/``forward`` give the hidden
  state of each sample's last token (BaseReward-style last-token pooling), for the usual heads;
- a generative judge's model: ``generate`` runs batched HF generation on ``inputs_embeds`` with the
  key/value cache (``judges.composite_backend.CompositeBackend`` wraps it as a judge backend).

Example:
    >>> encoder = ClipVisionEncoder({"embed_dim": 64, "vision_cfg": {...}, "text_cfg": {...}})
    >>> backbone = CompositeVLM("runs/tiny-lm", encoder, projector="mlp", pooled_grid=4)
    >>> model = RewardModel(backbone, LinearHead())   # mr.load reloads it with no hub access
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mmreward.configurable import Configurable
from mmreward.optional import require
from mmreward.types import Sample
from modalities.backbones.causal import CausalBackbone
from modalities.backbones.clip import _quiet_root_logger, _register_config
from modalities.backbones.colour_bins import ColourBins
from modalities.backbones.pooling import last_token_index
from modalities.image import denormalize, load_image, normalize, pil_to_tensor, resize_center_crop


class _Pixels:
    """``pixels``: one image as the encoder's input, for encoders with ``image_size``, ``image_mean``
    and ``image_std``."""

    def pixels(self, image: Any, sample: Sample | None = None, field: str = "image") -> torch.Tensor:
        """(3, S, S) normalised pixels of one image (path, PIL, array or tensor); errors name the field."""
        tensor = pil_to_tensor(load_image(image, sample, field))[None]
        return normalize(resize_center_crop(tensor, self.image_size), self.image_mean, self.image_std)[0]


class ClipVisionEncoder(_Pixels, nn.Module, Configurable):
    """The open_clip visual tower (as ``ClipBackbone`` builds it) returning its patch tokens.

    Args:
        model_config: An open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``); only
            the vision part is built.
        pretrained: A local open_clip checkpoint (or a tag) for the whole CLIP; None: random weights.
    """

    def __init__(self, model_config: dict[str, Any], pretrained: str | None = None) -> None:
        super().__init__()
        open_clip = require("open_clip", "clip")
        self.model_config = dict(model_config)
        with _quiet_root_logger():
            clip = open_clip.create_model(_register_config(self.model_config), pretrained=pretrained)
        self.visual = clip.visual
        self.visual.output_tokens = True
        size = self.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.image_mean = tuple(getattr(self.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        self.image_std = tuple(getattr(self.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        self.width = int(self.model_config["vision_cfg"]["width"])
        self.grid = self.image_size // int(self.model_config["vision_cfg"]["patch_size"])

    def export_args(self, directory: Path | None, prefix: str) -> dict[str, Any]:
        """Rebuild from the architecture alone: the weights come from model.safetensors."""
        return {"pretrained": None}

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, grid * grid, width) patch tokens."""
        _, tokens = self.visual(pixel_values)
        return tokens


class ConvVisionEncoder(_Pixels, nn.Module, Configurable):
    """A small convolutional image encoder from random init, returning its last feature map as tokens.

    Each stage is a 3 x 3 convolution with stride 2 then ``depth - 1`` convolutions with stride 1,
    each followed by a GroupNorm (one group: per-image statistics, so a sample's tokens do not
    depend on its batch) and a GELU. The last map, ``image_size / 2**len(channels)`` on a side,
    becomes the tokens, row by row, with a learned position embedding added.

    Measured as the pixel judge's eye (stage 1 of ``judges.pixel_training``, docs/judges.md): from
    scratch it learns to read shape, count and size far better than the two-layer ViT with
    8 px patches in the same steps, but it does not learn to read colour (chance level), with or
    without the colour bins; it is not the quick-start judge's encoder yet.

    Args:
        image_size: Side of the (square) input in pixels; images are resized and centre-cropped to it.
        channels: Output channels of each stage; the last one is the token width.
        depth: Convolutions per stage (the first with stride 2).
        colour_levels: Feed the first convolution a learned soft colour histogram of each pixel
            (``ColourBins`` with this many levels per channel, ``levels**3`` bins) beside the pixels;
            None: the pixels alone.
    """

    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)

    def __init__(
        self,
        image_size: int = 64,
        channels: list[int] = (32, 64, 64),
        depth: int = 1,
        colour_levels: int | None = None,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or image_size % 2 ** len(channels):
            raise ValueError(
                f"ConvVisionEncoder's image_size {image_size} must be divisible by 2**len(channels) "
                f"= {2 ** len(channels)}; got channels {channels}. Use fewer stages or another size."
            )
        if depth < 1:
            raise ValueError(f"ConvVisionEncoder's depth must be at least 1; got {depth}.")
        self.colour_bins = ColourBins(colour_levels) if colour_levels else None
        layers: list[nn.Module] = []
        width = 3 + (self.colour_bins.out_channels if self.colour_bins is not None else 0)
        for out in channels:
            for i in range(depth):
                layers += [
                    nn.Conv2d(width, out, 3, stride=2 if i == 0 else 1, padding=1),
                    nn.GroupNorm(1, out),
                    nn.GELU(),
                ]
                width = out
        self.layers = nn.Sequential(*layers)
        self.image_size, self.width = int(image_size), channels[-1]
        self.grid = self.image_size // 2 ** len(channels)
        self.position = nn.Parameter(torch.randn(self.grid * self.grid, self.width) * 0.02)

    def export_args(self, directory: Path | None, prefix: str) -> dict[str, Any]:
        """Nothing to write: the architecture is the init args, the weights are in model.safetensors."""
        return {}

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, grid * grid, width) tokens: the last feature map, row by row, plus the position embedding."""
        x = pixel_values
        if self.colour_bins is not None:  # the bins read pixels in [0, 1]
            x = torch.cat([x, self.colour_bins(denormalize(x, self.image_mean, self.image_std))], 1)
        return self.layers(x).flatten(2).transpose(1, 2) + self.position


class ClipResNetEncoder(_Pixels, nn.Module, Configurable):
    """open_clip's ModifiedResNet image tower (CLIP's ResNet) returning a stage's feature map as tokens.

    The tower is the one ``ClipBackbone`` builds from a config whose ``vision_cfg.layers`` is a list
    (the text-to-image quick start's: base width 8, layers ``[1, 1, 1, 1]``). Its attention pool,
    which gives CLIP's single pooled vector, is dropped; instead the stem and residual stages run up
    to the deepest stage in ``read_out`` and each listed stage's map is resized (nearest) to the
    largest listed grid and concatenated along channels, then read row by row as tokens with a
    learned position embedding added. At 64 px the stages' grids are 16, 8, 4 and 2 on a side
    (``layer1`` .. ``layer4``), ``4 * width`` to ``32 * width`` channels wide.

    The tower keeps open_clip's BatchNorm: in training mode a sample's tokens depend on its batch, in
    eval mode (judging, scoring) they do not.

    Args:
        model_config: An open_clip model config (``embed_dim``, ``vision_cfg`` with a list of
            ``layers``, ``text_cfg``); only the vision part is built.
        read_out: The stages whose maps become the tokens, any of ``layer1`` .. ``layer4``.
        pretrained: A local open_clip checkpoint (or a tag) for the whole CLIP; None: random weights.
    """

    stages = ("layer1", "layer2", "layer3", "layer4")

    def __init__(
        self,
        model_config: dict[str, Any],
        read_out: list[str] = ("layer3",),
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        open_clip = require("open_clip", "clip")
        self.model_config = dict(model_config)
        vision = self.model_config["vision_cfg"]
        if not isinstance(vision.get("layers"), (list, tuple)) or len(vision["layers"]) != 4:
            raise ValueError(
                "ClipResNetEncoder needs a ResNet tower: vision_cfg.layers must list four stage depths "
                f"(e.g. [1, 1, 1, 1]); got {vision.get('layers')!r}. Use ClipVisionEncoder for a ViT."
            )
        self.read_out = [str(name) for name in read_out]
        unknown = [name for name in self.read_out if name not in self.stages]
        if not self.read_out or unknown:
            raise ValueError(f"read_out must name stages among {list(self.stages)}; got {list(read_out)}.")
        with _quiet_root_logger():
            clip = open_clip.create_model(_register_config(self.model_config), pretrained=pretrained)
        self.visual = clip.visual
        self.depth = max(self.stages.index(name) for name in self.read_out) + 1
        self.visual.attnpool = None  # the pooled vector is not used; the stages past the read-out neither
        for name in self.stages[self.depth :]:
            setattr(self.visual, name, None)
        self.image_size = int(vision["image_size"])
        self.image_mean = tuple(getattr(self.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        self.image_std = tuple(getattr(self.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        base = int(vision.get("width", 64))
        index = [self.stages.index(name) for name in self.read_out]
        if self.image_size % 2 ** (2 + self.depth):
            raise ValueError(
                f"ClipResNetEncoder's image_size {self.image_size} must be divisible by "
                f"{2 ** (2 + self.depth)} to read {self.read_out}."
            )
        self.grid = self.image_size // 2 ** (2 + min(index))
        self.width = sum(4 * base * 2**i for i in index)
        self.position = nn.Parameter(torch.randn(self.grid * self.grid, self.width) * 0.02)

    def export_args(self, directory: Path | None, prefix: str) -> dict[str, Any]:
        """Rebuild from the architecture alone: the weights come from model.safetensors."""
        return {"pretrained": None}

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, grid * grid, width) tokens: the read-out stages' maps, row by row, plus the position embedding."""
        x = self.visual.stem(pixel_values.to(self.visual.conv1.weight.dtype))
        maps = []
        for name in self.stages[: self.depth]:
            x = getattr(self.visual, name)(x)
            if name in self.read_out:
                maps.append(x)
        maps = [m if m.shape[-1] == self.grid else nn.functional.interpolate(m, size=self.grid) for m in maps]
        return torch.cat(maps, 1).flatten(2).transpose(1, 2) + self.position


class CompositeVLM(nn.Module, Configurable):
    """Image encoder -> projector -> causal LM, images spliced in at ``<image>``; see the module docstring.

    Args:
        language_model: A causal LM folder or hub id (``AutoModelForCausalLM`` + ``AutoTokenizer``
            with a chat template).
        encoder: The image encoder: a module with ``pixels(image, sample, field)``, ``width``,
            ``grid`` and ``forward(pixels) -> (N, grid * grid, width)``.
        projector: ``"linear"`` (LLaVA) or ``"mlp"`` (two layers with GELU, LLaVA-1.5).
        pooled_grid: Average-pool the encoder's token grid to this side before projecting (fewer
            image tokens, shorter sequences); None keeps every patch token.
        image_token: The placeholder the chat text holds where an image goes (added to the
            tokenizer as a special token when missing).
        freeze_encoder: Keep the encoder's weights fixed.
        freeze_projector: Keep the projector's weights fixed.
        freeze_language_model: Keep the LM's weights fixed (LLaVA stage 1 trains the projector alone).
        lora: peft ``LoraConfig`` arguments (e.g. ``{"r": 16, "lora_alpha": 32}``) for adapters on the
            LM's attention and MLP projections (``CausalBackbone.lora_targets`` unless given); the
            LM's own weights are then frozen, the encoder and projector train as set above.
        system_prompt: A system turn before each user turn; None adds none.
        from_config: Build the LM from its folder's config with random weights (saved models set
            it: their weights come from ``model.safetensors``).
    """

    def __init__(
        self,
        language_model: str,
        encoder: nn.Module,
        projector: Literal["linear", "mlp"] = "mlp",
        pooled_grid: int | None = None,
        image_token: str = "<image>",
        freeze_encoder: bool = False,
        freeze_projector: bool = False,
        freeze_language_model: bool = False,
        lora: dict[str, Any] | None = None,
        system_prompt: str | None = None,
        from_config: bool = False,
    ) -> None:
        super().__init__()
        transformers = require("transformers", "vlm")
        self.language_model_path, self.image_token, self.system_prompt = (
            str(language_model),
            image_token,
            system_prompt,
        )
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.language_model_path)
        if not self.tokenizer.chat_template:
            raise ValueError(
                f"The tokenizer at {language_model!r} has no chat template, so the turns cannot be laid out. "
                "Use an instruct/chat checkpoint or set tokenizer.chat_template."
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token  # padding is masked out; any id will do
        if from_config:
            config = transformers.AutoConfig.from_pretrained(self.language_model_path)
            self.language_model = transformers.AutoModelForCausalLM.from_config(config)
        else:
            self.language_model = transformers.AutoModelForCausalLM.from_pretrained(
                self.language_model_path, dtype=torch.float32
            )
            self.language_model.train()  # from_pretrained hands it back in eval mode; a new module trains
        if image_token not in self.tokenizer.get_vocab():
            self.tokenizer.add_tokens([image_token], special_tokens=True)
        self.image_token_id = int(self.tokenizer.convert_tokens_to_ids(image_token))
        if self.image_token_id >= self.language_model.get_input_embeddings().weight.shape[0]:
            self.language_model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        if lora is not None:
            peft = require("peft", "vlm")
            settings = {"target_modules": CausalBackbone.lora_targets, **lora}
            self.language_model = peft.get_peft_model(self.language_model, peft.LoraConfig(**settings))
        self.encoder = encoder
        if pooled_grid is not None and not 1 <= pooled_grid <= encoder.grid:
            raise ValueError(
                f"pooled_grid must be between 1 and the encoder's grid {encoder.grid}; got {pooled_grid}."
            )
        self.pooled_grid = pooled_grid
        hidden = int(self.language_model.config.get_text_config().hidden_size)
        self.projector = (
            nn.Linear(encoder.width, hidden)
            if projector == "linear"
            else nn.Sequential(nn.Linear(encoder.width, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        )
        self.feature_dim = hidden
        self.tokens_per_image = (pooled_grid or encoder.grid) ** 2
        for part, frozen in (
            (encoder, freeze_encoder),
            (self.projector, freeze_projector),
            (self.language_model, freeze_language_model),
        ):
            if frozen:
                part.requires_grad_(False)

    def export_args(self, directory: Path | None, prefix: str) -> dict[str, Any]:
        """Write the LM's config and tokenizer (with the image token) under ``prefix``; the reloaded
        backbone builds from them and takes its weights from ``model.safetensors``."""
        if directory is None:
            return {"from_config": True}
        target = directory / prefix / "language_model"
        self.language_model.config.save_pretrained(target)
        self.tokenizer.save_pretrained(target)
        return {"language_model": {"asset": f"{prefix}/language_model"}, "from_config": True}

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {
            "language_model": self.language_model_path,
            "image_size": self.encoder.image_size,
            "image_tokens": self.tokens_per_image,
            "pooling": "last",
        }

    # -- inputs ---------------------------------------------------------------------------------

    def chat_text(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        """The chat-template text of ``messages``; each image part becomes the ``<image>`` placeholder."""
        flat = []
        for message in messages:
            content = message["content"]
            if not isinstance(content, str):
                content = "".join(
                    self.image_token + "\n" if part.get("type") == "image" else part.get("text", "")
                    for part in content
                )
            flat.append({"role": message["role"], "content": content})
        return self.tokenizer.apply_chat_template(
            flat, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def sample_messages(self, sample: Sample) -> list[dict[str, Any]]:
        """The chat of one sample: images then the prompt as the user turn, the response as the assistant's."""
        parts = [{"type": "image", "image": None} for _ in self.sample_images(sample)]
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": [*parts, {"type": "text", "text": sample.prompt}]})
        if sample.response is not None:
            messages.append({"role": "assistant", "content": sample.response})
        return messages

    @staticmethod
    def sample_images(sample: Sample) -> list[tuple[Any, str]]:
        """``(image, field)`` for each image of ``sample``, in order (source image, image, images)."""
        out = [(sample.source_image, "source_image")] if sample.source_image is not None else []
        out += [(sample.image, "image")] if sample.image is not None else []
        out += [(img, f"images[{i}]") for i, img in enumerate(sample.images or [])]
        return out

    def expand(self, ids: list[int]) -> list[int]:
        """``ids`` with each ``<image>`` id repeated ``tokens_per_image`` times (the image's slots)."""
        row: list[int] = []
        for token in ids:
            row += [token] * (self.tokens_per_image if token == self.image_token_id else 1)
        return row

    def tokenize(
        self, texts: list[str], padding_side: Literal["left", "right"] = "right"
    ) -> dict[str, torch.Tensor]:
        """Token ids with each ``<image>`` placeholder widened to ``tokens_per_image`` slots, padded."""
        rows = [self.expand(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            ids[i, span], mask[i, span] = torch.tensor(row), 1
        return {"input_ids": ids, "attention_mask": mask}

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Render each sample with the chat template, load its images; a bad image names its record and field."""
        if not samples:
            raise ValueError("collate got no samples; pass at least one.")
        texts = [
            self.chat_text(self.sample_messages(s), add_generation_prompt=s.response is None) for s in samples
        ]
        pixels = [self.encoder.pixels(img, s, name) for s in samples for img, name in self.sample_images(s)]
        return {**self.tokenize(texts), "pixel_values": self._stack(pixels)}

    def _stack(self, pixels: list[torch.Tensor]) -> torch.Tensor:
        size = self.encoder.image_size
        return torch.stack(pixels) if pixels else torch.zeros((0, 3, size, size))

    # -- model ----------------------------------------------------------------------------------

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, tokens_per_image, hidden) projected image tokens."""
        tokens = self.encoder(pixel_values)  # (N, G*G, W)
        if self.pooled_grid is not None and self.pooled_grid != self.encoder.grid:
            n, _, w = tokens.shape
            grid = tokens.transpose(1, 2).reshape(n, w, self.encoder.grid, self.encoder.grid)
            tokens = nn.functional.adaptive_avg_pool2d(grid, self.pooled_grid).flatten(2).transpose(1, 2)
        return self.projector(tokens)

    def embed(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, image_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, S, hidden) input embeddings: the text's, with image features in the ``<image>`` slots.

        ``image_index`` (optional, one entry per ``<image>`` in the batch, in order) names the row of
        ``pixel_values`` each slot group shows, so an image that several requests share (k samples of
        one request, both orders of a pairwise swap) is encoded once.
        """
        embeds = self.language_model.get_input_embeddings()(input_ids)
        slots = input_ids == self.image_token_id
        images = len(pixel_values) if image_index is None else len(image_index)
        expected = images * self.tokens_per_image
        if int(slots.sum()) != expected:
            raise ValueError(
                f"The batch holds {int(slots.sum())} image-token slots but {images} image(s) "
                f"({expected} slots). Build inputs with collate/tokenize, one {self.image_token!r} per image."
            )
        if expected:
            features = self.image_features(pixel_values).to(embeds.dtype)
            if image_index is not None:
                features = features[image_index]
            embeds = embeds.masked_scatter(slots[..., None], features.reshape(-1, embeds.shape[-1]))
        return embeds

    @staticmethod
    def positions(attention_mask: torch.Tensor) -> torch.Tensor:
        """Position ids counting real tokens only, so padding on either side does not shift them."""
        return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)

    def run(
        self, inputs: dict[str, torch.Tensor], labels: torch.Tensor | None = None, hidden_states: bool = False
    ) -> Any:
        """The LM's output on a collated or tokenized batch: logits, the loss when ``labels`` are given,
        the hidden states when there are no labels or ``hidden_states`` asks for them."""
        mask = inputs["attention_mask"]
        return self.language_model(
            inputs_embeds=self.embed(inputs["input_ids"], inputs["pixel_values"], inputs.get("image_index")),
            attention_mask=mask,
            position_ids=self.positions(mask),
            labels=labels,
            output_hidden_states=hidden_states or labels is None,
            use_cache=False,
        )

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, hidden) float32 features: the last layer's state at each row's last real token."""
        hidden = self.run(inputs).hidden_states[-1]  # (N, S, D)
        index = last_token_index(inputs["attention_mask"])
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index].float()

    @torch.inference_mode()
    def generate(self, inputs: dict[str, torch.Tensor], **kwargs: Any) -> Any:
        """HF ``generate`` on a left-padded batch (``tokenize(..., padding_side="left")`` + pixels).

        The image tokens enter as ``inputs_embeds``; the key/value cache carries the prompt, so each
        new token costs one step. Keyword arguments go to ``generate`` (``max_new_tokens``,
        ``do_sample``, ``output_logits``, ...); the returned sequences hold the new tokens only.
        """
        return self.language_model.generate(
            inputs_embeds=self.embed(inputs["input_ids"], inputs["pixel_values"], inputs.get("image_index")),
            attention_mask=inputs["attention_mask"],
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **kwargs,
        )
