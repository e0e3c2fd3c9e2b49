"""A point-cloud-conditioned diffusion policy over pick-and-place parameters.

DeformPAM (Chen et al., 2024) proposes candidate primitives with a diffusion model conditioned on
the observed cloud, then lets the reward model choose among them; this is that policy at small
scale. A PointNet++-style encoder pools the (centroid-centred) cloud into a condition vector, an
MLP predicts the noise added to the 4 action parameters (pick x, y; place x, y) — the DDPM
objective of Ho et al. (2020), as Diffusion Policy (Chi et al., 2023) uses for actions — and
sampling runs diffusers' ``DDIMScheduler``. It is trained on the oracle's chosen actions.

DeformPAM's second scorer is here too: ``dpo_finetune`` fine-tunes a copy of the policy on
preference pairs with Diffusion-DPO, and ``implicit_reward`` scores candidates by the log-ratio of
the fine-tuned and reference policies, estimated from their denoising errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmreward.configurable import Configurable
from mmreward.optional import require
from modalities.backbones.pointnet import PointNetEncoder, prepare_points
from modalities.pointcloud import workspace_frame


def _timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al., 2017), (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-np.log(10_000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class DiffusionPolicy(nn.Module, Configurable):
    """Samples pick-and-place candidates for a cloud; also a ``CandidateSampler``.

    Args:
        encoder: Scene encoder for the condition.
        workspace: Table area ``(xmin, ymin, xmax, ymax)``; samples are clipped into it (the
            projection of the policy's output onto the valid action space).
        num_points: Points kept per cloud.
        hidden: Width of the denoising MLP.
        train_timesteps: Diffusion steps in training (Diffusion Policy uses 100).
        inference_steps: DDIM steps when sampling (Diffusion Policy uses 10 to 16).
    """

    action_dim = 4

    def __init__(
        self,
        encoder: PointNetEncoder,
        workspace: tuple[float, float, float, float] = (-0.3, -0.3, 0.3, 0.3),
        num_points: int = 256,
        hidden: int = 256,
        train_timesteps: int = 100,
        inference_steps: int = 10,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.workspace = tuple(float(v) for v in workspace)
        self._center, self._half = workspace_frame(self.workspace)
        self.num_points, self.train_timesteps, self.inference_steps = (
            num_points,
            train_timesteps,
            inference_steps,
        )
        self.condition_proj = nn.Linear(2 * encoder.dim, hidden)
        self.denoiser = nn.Sequential(
            nn.Linear(self.action_dim + 64 + hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, self.action_dim),
        )

    def _scheduler(self, kind: str):
        diffusers = require("diffusers", "robotics")
        cls = diffusers.DDPMScheduler if kind == "ddpm" else diffusers.DDIMScheduler
        return cls(
            num_train_timesteps=self.train_timesteps, beta_schedule="squaredcos_cap_v2", clip_sample=True
        )

    def prepare(self, clouds: list[Any]) -> tuple[torch.Tensor, np.ndarray]:
        """(B, P, C) centroid-centred canonical clouds and their (B, 2) canonical origins."""
        points = [
            prepare_points(c, None, self.encoder.in_channels, self.num_points, "bounds", self.workspace)
            for c in clouds
        ]
        origins = np.stack([p[:, :2].mean(axis=0) for p in points])
        for p, o in zip(points, origins):
            p[:, :2] -= o
        return torch.from_numpy(np.stack(points)), origins

    def condition(self, points: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.encoder(points)
        return self.condition_proj(torch.cat([tokens.amax(dim=1), tokens.mean(dim=1)], dim=-1))

    def predict_noise(self, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.denoiser(torch.cat([noisy, _timestep_embedding(t, 64), cond], dim=-1))

    def encode_actions(self, actions: list[dict[str, Any]], origins: np.ndarray) -> torch.Tensor:
        """Pick-and-place dicts -> (B, 4) parameters in the centroid frame."""
        params = np.array([[*a["pick"], *a["place"]] for a in actions], dtype=np.float32).reshape(-1, 2, 2)
        params = (params - self._center) / self._half - origins[:, None]
        return torch.from_numpy(params.reshape(-1, 4).astype(np.float32))

    def fit(
        self,
        clouds: list[Any],
        actions: list[dict[str, Any]],
        steps: int = 500,
        batch_size: int = 32,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> list[float]:
        """Train on (cloud, action) examples with the DDPM noise-prediction loss; returns the losses."""
        if len(clouds) != len(actions) or not clouds:
            raise ValueError(
                f"fit needs one action per cloud and at least one example; got {len(clouds)} clouds, {len(actions)} actions."
            )
        generator = torch.Generator().manual_seed(seed)
        points, origins = self.prepare(clouds)
        targets = self.encode_actions(actions, origins)
        scheduler = self._scheduler("ddpm")
        optimizer = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=1e-4)
        self.train()
        losses = []
        for _ in range(steps):
            idx = torch.randint(len(targets), (min(batch_size, len(targets)),), generator=generator)
            noise = torch.randn(len(idx), self.action_dim, generator=generator)
            t = torch.randint(self.train_timesteps, (len(idx),), generator=generator)
            noisy = scheduler.add_noise(targets[idx], noise, t)
            loss = F.mse_loss(self.predict_noise(noisy, t, self.condition(points[idx])), noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        self.eval()
        return losses

    @torch.inference_mode()
    def sample(
        self, point_clouds: list[Any], num: int, seed: int | None = None
    ) -> list[list[dict[str, Any]]]:
        """``num`` pick-and-place candidates per cloud, all clouds denoised together."""
        generator = torch.Generator().manual_seed(seed if seed is not None else 0)
        points, origins = self.prepare(point_clouds)
        cond = self.condition(points).repeat_interleave(num, dim=0)  # (B*num, H)
        scheduler = self._scheduler("ddim")
        scheduler.set_timesteps(self.inference_steps)
        x = torch.randn(len(cond), self.action_dim, generator=generator)
        for t in scheduler.timesteps:
            eps = self.predict_noise(x, t.expand(len(x)), cond)
            x = scheduler.step(eps, t, x).prev_sample
        params = x.view(len(point_clouds), num, 2, 2).numpy() + origins[:, None, None]
        xy = params * self._half + self._center
        xmin, ymin, xmax, ymax = self.workspace
        xy[..., 0] = np.clip(xy[..., 0], xmin, xmax)
        xy[..., 1] = np.clip(xy[..., 1], ymin, ymax)
        return [
            [
                {"primitive": "pick_place", "pick": a[0].tolist(), "place": a[1].tolist()}
                for a in cloud_actions
            ]
            for cloud_actions in xy.astype(float)
        ]


def denoising_errors(
    policy: DiffusionPolicy, points: torch.Tensor, params: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """(B,) squared error of ``policy``'s noise prediction for actions ``params`` noised to step ``t``."""
    noisy = policy._scheduler("ddpm").add_noise(params, noise, t)
    return (policy.predict_noise(noisy, t, policy.condition(points)) - noise).square().sum(-1)


def dpo_finetune(
    policy: DiffusionPolicy,
    reference: DiffusionPolicy,
    clouds: list[Any],
    chosen: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    beta: float = 2.0,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 5e-5,
    seed: int = 0,
) -> list[float]:
    """Fine-tune ``policy`` on preference pairs with the Diffusion-DPO loss (Wallace et al., 2023).

    ``-log sigmoid(-beta * ((e_w - e_w_ref) - (e_l - e_l_ref)))`` with ``e`` the denoising errors of
    the chosen (w) and rejected (l) action at a shared random step and noise; ``reference`` (the
    policy before fine-tuning) stays fixed. DeformPAM fine-tunes its primitive policy this way.
    The reference should be fitted on the actions the pairs compare (the policy that proposed
    them): where the candidates lie far outside it, its denoising errors are large and noisy and
    the log-ratio learns little. ``beta``, ``lr`` and ``steps`` were chosen on the cloth task
    (``docs/robotics.md``): larger steps (lr 1e-4 to 3e-3, beta 5 to 20) overfit the training scenes, and
    Diffusion-DPO's beta of 5000 multiplies a per-timestep-weighted error and does not carry over.
    """
    generator = torch.Generator().manual_seed(seed)
    points, origins = policy.prepare(clouds)
    win, lose = policy.encode_actions(chosen, origins), policy.encode_actions(rejected, origins)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    reference.eval()
    policy.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(win), (min(batch_size, len(win)),), generator=generator)
        t = torch.randint(policy.train_timesteps, (len(idx),), generator=generator)
        noise = torch.randn(len(idx), policy.action_dim, generator=generator)
        with torch.no_grad():
            ref_w, ref_l = (denoising_errors(reference, points[idx], x[idx], t, noise) for x in (win, lose))
        pol_w, pol_l = (denoising_errors(policy, points[idx], x[idx], t, noise) for x in (win, lose))
        loss = -F.logsigmoid(-beta * ((pol_w - ref_w) - (pol_l - ref_l))).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    policy.eval()
    return losses


@torch.inference_mode()
def implicit_reward(
    policy: DiffusionPolicy,
    reference: DiffusionPolicy,
    point_cloud: Any,
    candidates: list[dict[str, Any]],
    samples: int = 256,
    max_timestep: int = 30,
    seed: int = 0,
) -> np.ndarray:
    """DeformPAM's implicit reward of each candidate: ``-(e_policy - e_reference)``, averaged.

    The DPO log-ratio of the fine-tuned and reference policies, up to scale, estimated from
    denoising errors at ``samples`` shared (step, noise) draws with steps below ``max_timestep``;
    higher is better. The scene is encoded once per policy. At late steps the noisy action says
    little about the action, so their errors add noise to the estimate, not signal (held-out pair
    accuracy on the cloth task 0.67 with steps below 30, 0.63 with all 100, over five seeds).
    """
    if not 0 < max_timestep <= policy.train_timesteps:
        raise ValueError(
            f"max_timestep must be in 1..{policy.train_timesteps} (the policy's train_timesteps); got {max_timestep}."
        )
    generator = torch.Generator().manual_seed(seed)
    points, origins = policy.prepare([point_cloud])
    params = policy.encode_actions(candidates, np.repeat(origins, len(candidates), axis=0))
    t = torch.randint(max_timestep, (samples,), generator=generator).repeat_interleave(len(candidates))
    noise = torch.randn(samples, policy.action_dim, generator=generator).repeat_interleave(
        len(candidates), dim=0
    )
    noisy = policy._scheduler("ddpm").add_noise(params.repeat(samples, 1), noise, t)
    errors = [
        (m.predict_noise(noisy, t, m.condition(points).expand(len(noisy), -1)) - noise).square().sum(-1)
        for m in (policy, reference)
    ]
    return -(errors[0] - errors[1]).view(samples, len(candidates)).mean(0).numpy()


class ImplicitRewardSelector:
    """Choose among candidates by ``implicit_reward`` (DeformPAM's second scorer).

    Args:
        policy: The DPO-fine-tuned policy.
        reference: The policy before fine-tuning.
        samples: (step, noise) draws per estimate.
        max_timestep: The draws' steps lie below it (see ``implicit_reward``).
        seed: Seed of the draws (shared by all candidates, which lowers the variance of their differences).
    """

    def __init__(
        self,
        policy: DiffusionPolicy,
        reference: DiffusionPolicy,
        samples: int = 256,
        max_timestep: int = 30,
        seed: int = 0,
    ) -> None:
        self.policy, self.reference = policy.eval(), reference.eval()
        self.samples, self.max_timestep, self.seed = samples, max_timestep, seed

    def select(self, point_cloud: Any, candidates: list[dict[str, Any]]) -> tuple[int, np.ndarray]:
        """The best candidate's index and every candidate's implicit reward."""
        if not candidates:
            raise ValueError(
                "ImplicitRewardSelector.select got no candidates; the sampler must propose at least one."
            )
        scores = implicit_reward(
            self.policy, self.reference, point_cloud, candidates, self.samples, self.max_timestep, self.seed
        )
        if not np.isfinite(scores).all():
            raise ValueError(
                f"Non-finite implicit rewards for candidates {np.flatnonzero(~np.isfinite(scores)).tolist()}; no action is chosen."
            )
        return int(np.argmax(scores)), scores


def oracle_examples(records: list[Any]) -> tuple[list[Any], list[dict[str, Any]]]:
    """(clouds, actions) of the best candidate of each ranking record: the policy's training set."""
    clouds, actions = [], []
    for record in records:
        best = record.candidates[record.order[0]]
        clouds.append(best.point_cloud)
        actions.append(best.action)
    return clouds, actions
