"""``ClipVideoBackbone``: per-frame open_clip features pooled over time, joined with the prompt.

The fast route for scoring many clips: every sampled frame goes through the CLIP image tower in one
batch, a temporal pooler turns the ``(N, T, D)`` frame embeddings into one clip embedding, and the
clip embedding is joined with the prompt's text embedding exactly as ``ClipBackbone`` joins an image's.
``temporal="mean"`` is order-blind (the CLIP4Clip "meanP" baseline, Luo et al., 2021); ``"transformer"``
adds a small transformer over the frame sequence with learned position embeddings (CLIP4Clip's
"seqTransf"), which is what lets a model see motion, teleporting or flicker. The prompt embedding is
CLIP's (``text_pool="eot"``) or a bag of the prompt's word embeddings (``"words"``), which a model
trained from scratch needs to tell prompts one word apart (see ``ClipVideoBackbone``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from mmreward.types import Sample
from modalities.backbones.clip import ClipBackbone
from modalities.backbones.colour_bins import ColourBins
from modalities.image import denormalize, normalize
from modalities.video import FrameSampler, load_video


class TemporalTransformer(nn.Module):
    """A pre-norm transformer over frame embeddings; the clip embedding is the mean frame plus the
    transformer's summary token, so at initialisation it is close to mean pooling.

    Given the prompt's embedding, it joins the sequence as one more token, so attention can compare
    what the frames show with what the prompt asks (which way, which colour) before pooling.

    Args:
        dim: Frame-embedding size.
        layers: Transformer layers.
        heads: Attention heads (``dim`` must divide by it).
        max_frames: Length of the learned position table.
        motion: Add to each frame's token what changed since the previous frame (a learned map of
            the embedding difference, identity at first), so motion (which way, how fast, a jump)
            is in the tokens from the first step instead of something attention has to find.
        travel: Add to the clip embedding a learned map (zero at first) of the change from the first
            frame's embedding to the last: where things went over the clip, in the embedding the head
            reads. Through the summary token alone, the direction of motion reached alignment on some
            worlds only (docs/video.md).
    """

    def __init__(
        self, dim: int, layers: int, heads: int, max_frames: int, motion: bool = False, travel: bool = False
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(
                f"TemporalTransformer: the embedding size {dim} does not divide by heads={heads}; pick a divisor."
            )
        self.position = nn.Parameter(torch.zeros(max_frames + 2, dim))  # summary, prompt, frames
        nn.init.normal_(self.position, std=0.02)
        self.summary = nn.Parameter(torch.zeros(1, 1, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)  # start as mean pooling; the transformer learns a correction
        nn.init.zeros_(self.out.bias)
        self.motion = nn.Linear(dim, dim, bias=False) if motion else None
        if self.motion is not None:
            nn.init.eye_(self.motion.weight)
        self.travel = nn.Linear(dim, dim) if travel else None
        if self.travel is not None:
            nn.init.zeros_(self.travel.weight)
            nn.init.zeros_(self.travel.bias)

    def forward(self, frames: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T, D) unit-norm frame embeddings (and (N, D) prompt embeddings) -> (N, D) clip embeddings."""
        n, t, d = frames.shape
        if t > len(self.position) - 2:
            raise ValueError(
                f"Got {t} frames but the temporal transformer was built for at most {len(self.position) - 2}; raise max_frames."
            )
        tokens = frames
        if self.motion is not None:
            change = torch.cat([torch.zeros_like(frames[:, :1]), frames.diff(dim=1)], dim=1)  # (N, T, D)
            tokens = frames + self.motion(change)
        parts = (
            [self.summary.expand(n, 1, d)]
            + ([] if text is None else [text[:, None] * d**0.5])
            + [tokens * d**0.5]
        )
        tokens = torch.cat(parts, dim=1)
        tokens = tokens + self.position[: tokens.shape[1]]
        summary = self.norm(self.encoder(tokens)[:, 0])  # (N, D)
        clip = frames.mean(1) + self.out(summary)
        return clip if self.travel is None else clip + self.travel(frames[:, -1] - frames[:, 0])


class ClipVideoBackbone(ClipBackbone):
    """An open_clip model over sampled video frames, with temporal pooling (see the module docstring).

    ``collate`` decodes each sample's ``video`` (path or frames) with ``modalities.video`` into
    ``num_frames`` frames at the tower's resolution, and tokenizes each distinct prompt once.

    Args:
        model_name: An open_clip model name, or a name for ``model_config``.
        pretrained: An open_clip pretrained tag or checkpoint path; None starts from random weights.
        model_config: An open_clip model config dict or JSON path.
        feature: How clip and text embeddings are joined (``ClipBackbone``).
        freeze_image: Keep the image tower fixed.
        freeze_text: Keep the text tower fixed.
        sampler: Which frames to decode; default 8 frames uniform over the clip.
        temporal: ``"mean"`` pooling or a ``"transformer"`` over the frames.
        temporal_layers: Layers of the temporal transformer.
        temporal_heads: Heads of the temporal transformer.
        temporal_sees_prompt: Give the temporal transformer the prompt embedding as a token.
        temporal_motion: Give the temporal transformer each frame's change from the previous one.
        temporal_travel: Add the change from the first frame to the last to the clip embedding
            (``TemporalTransformer``'s ``travel``).
        text_pool: How the prompt embedding is read: ``"eot"`` is CLIP's (the text tower's state at
            the end-of-text token); ``"words"`` is the mean of the prompt's word-token embeddings
            (the tower's input table, start/end/padding left out) through the tower's text
            projection: a bag of words in which every word counts the same. A small tower started
            from random weights mixes its tokens unevenly: changing one word of a prompt may move its
            end-of-text embedding hardly at all (cosine 0.97-0.99 for some words in a 1-layer,
            width-32 tower), and the head cannot learn what it cannot see.
        colour_bins: Add to each frame's embedding a learned map of the frame's colour histogram:
            ``ColourBins(levels=colour_bins)`` memberships averaged over the frame, as log shares.
            None (the default) leaves the frame embedding as the image tower gives it. A small tower
            trained from random weights reads colour late and unevenly (docs/video.md); the
            histogram puts "which colours, how much of each" in every frame token from the start.
        colour_centres: With ``colour_bins``, also give each bin's centre of mass in the frame (x and
            y in [-1, 1], pulled towards the middle when the bin holds little: a spatial soft-argmax,
            Levine et al., 2016), so the change from frame to frame says where each colour moves.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = None,
        model_config: dict[str, Any] | str | None = None,
        feature: Literal["product", "concat"] = "concat",
        freeze_image: bool = False,
        freeze_text: bool = False,
        sampler: FrameSampler | None = None,
        temporal: Literal["mean", "transformer"] = "transformer",
        temporal_layers: int = 2,
        temporal_heads: int = 4,
        temporal_sees_prompt: bool = True,
        temporal_motion: bool = False,
        temporal_travel: bool = False,
        text_pool: Literal["eot", "words"] = "eot",
        colour_bins: int | None = None,
        colour_centres: bool = False,
    ) -> None:
        super().__init__(model_name, pretrained, model_config, feature, freeze_image, freeze_text)
        self.text_pool = text_pool
        if text_pool == "words" and not hasattr(self.model, "token_embedding"):
            raise ValueError(
                f"text_pool='words' needs an open_clip CLIP model with its own token table; {model_name!r} "
                "has none. Use text_pool='eot'."
            )
        if colour_bins is not None and colour_bins < 2:
            raise ValueError(
                f"colour_bins is the number of levels per RGB channel (>= 2) or None; got {colour_bins}. Use 3 (27 bins) or leave it out."
            )
        if colour_centres and colour_bins is None:
            raise ValueError("colour_centres=True needs colour_bins (the levels per RGB channel, e.g. 3).")
        self.colour_bins = ColourBins(colour_bins) if colour_bins is not None else None
        self.colour_centres = colour_centres
        self.colour_map = (
            nn.Linear(self.colour_bins.out_channels * (3 if colour_centres else 1), self.embed_dim)
            if self.colour_bins is not None
            else None
        )
        if self.colour_map is not None:  # start as the tower alone; the map learns what colours add
            nn.init.zeros_(self.colour_map.weight)
            nn.init.zeros_(self.colour_map.bias)
        self.sampler = sampler if sampler is not None else FrameSampler()
        self.temporal, self.temporal_sees_prompt = temporal, temporal_sees_prompt
        max_frames = max(self.sampler.num_frames, 64)
        self.pool = (
            TemporalTransformer(
                self.embed_dim, temporal_layers, temporal_heads, max_frames, temporal_motion, temporal_travel
            )
            if temporal == "transformer"
            else None
        )

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {**super().preprocessing, "frames": self.sampler.init_args, "temporal": self.temporal}

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Decode and resize each sample's frames; tokenize the distinct prompts once."""
        clips = [load_video(s.video, self.sampler, self.image_size, s, "video") for s in samples]
        lengths = {len(c) for c in clips}
        if len(lengths) > 1:
            raise ValueError(
                f"Clips in one batch gave different frame counts {sorted(lengths)}; "
                "use FrameSampler(mode='uniform' or 'window') so every clip gives num_frames frames."
            )
        pixels = normalize(torch.stack(clips).flatten(0, 1), self.image_mean, self.image_std)
        return {
            "pixel_values": pixels.unflatten(0, (len(clips), -1)),
            **self.encode_prompts([s.prompt for s in samples]),
        }

    def tensor_inputs(self, videos: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Inputs for ``forward`` from ``(N, T, 3, H, W)`` frames in [0, 1]; gradients flow to them."""
        if len(prompts) != len(videos):
            raise ValueError(
                f"Got {len(videos)} videos but {len(prompts)} prompts; pass one prompt per video."
            )
        pixels = self.pixels_from_tensor(videos.flatten(0, 1)).unflatten(0, videos.shape[:2])
        return {"pixel_values": pixels, **self.encode_prompts(list(prompts))}

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(P, D) unit-norm prompt embeddings, read as ``text_pool`` says."""
        if self.text_pool == "eot":
            return super().encode_text(input_ids)
        special = (self.tokenizer.sot_token_id, self.tokenizer.eot_token_id, 0)  # open_clip pads with 0
        words = ~torch.isin(input_ids, torch.tensor(special, device=input_ids.device))  # (P, L)
        if not words.any(1).all():
            raise ValueError("A prompt has no words (an empty string?); every sample needs a prompt.")
        embedded = self.model.token_embedding(input_ids) * words[..., None]  # (P, L, W)
        bag = embedded.sum(1) / words.sum(1, keepdim=True)  # (P, W)
        projection = self.model.text_projection
        bag = projection(bag) if isinstance(projection, nn.Module) else bag @ projection
        return nn.functional.normalize(bag, dim=-1)

    def colour_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(M, 3, S, S) normalised frames -> (M, bins) log colour shares, then (``colour_centres``)
        each bin's x and y centres: (M, 3 * bins)."""
        # every other pixel each way: the shares and centres hardly change, the bins cost a sixth
        pixels = denormalize(pixel_values[..., ::2, ::2], self.image_mean, self.image_std)
        member = self.colour_bins(pixels)
        features = [torch.log(member.mean((2, 3)) + 0.01)]
        if self.colour_centres:
            where = torch.linspace(-1.0, 1.0, member.shape[-1], device=member.device)
            mass = member.sum((2, 3)) + 1.0  # one pixel's worth pulls an empty bin's centre to the middle
            features += [(member.sum(2) * where).sum(-1) / mass, (member.sum(3) * where).sum(-1) / mass]
        return torch.cat(features, dim=-1)

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(M, 3, S, S) normalised frames -> (M, D) unit-norm frame embeddings (with their colours)."""
        if self.colour_map is None:
            return self.encode_image(pixel_values)
        image = self.model.encode_image(pixel_values)
        return nn.functional.normalize(image + self.colour_map(self.colour_features(pixel_values)), dim=-1)

    def encode_video(self, pixel_values: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T, 3, S, S) normalised frames (and (N, D) prompt embeddings) -> (N, D) unit-norm clip embeddings."""
        n, t = pixel_values.shape[:2]
        frames = self.encode_frames(pixel_values.flatten(0, 1)).unflatten(0, (n, t))  # (N, T, D)
        if self.pool is None:
            return nn.functional.normalize(frames.mean(1), dim=-1)
        return nn.functional.normalize(self.pool(frames, text if self.temporal_sees_prompt else None), dim=-1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        text = self.encode_text(inputs["input_ids"])[inputs["text_index"]]  # (N, D)
        video = self.encode_video(inputs["pixel_values"], text)  # (N, D)
        return self.join(video, text)
