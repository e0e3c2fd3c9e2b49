"""``mmreward demo --task prm``: train the quick-start visual process reward model on a CPU, and report.

The world is ``mmreward.data.synthetic.visual_math``: rendered images (counted shapes, bar charts,
grids), questions that need 3-6 steps mixing reading the image and arithmetic, and chains with an
error injected at a known step (a misread, an arithmetic slip, a wrong carry-over). The model,
``PixelStepBackbone`` under ``mmreward.prm.ProcessRewardModel``, sees the rendered image and the
text (question and steps), never the scene's values: a small conv tower from random init reads the
pixels, a step encoder reads each step's words and numbers (with their values), and a causal
transformer over steps gives each step's feature.

``run`` fits ``configs/quickstart/prm.yaml``, reloads the model, and writes ``metrics.json`` and
``report.html``: held-out first-error F1 overall and per error kind beside two controls on the same
chains (images shuffled across chains; a blank image), and best-of-N accuracy for N = 1..32 on the
held-out pools (PRM-min, PRM-weighted vote, majority vote, random). Status and figures: docs/prm.md.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from integrations.demos.prm_reader import NumberReader, number_at
from integrations.demos.quickstart import run_quickstart
from mmreward.configurable import Configurable
from mmreward.controls import derangement
from mmreward.data.records import read_records
from mmreward.data.synthetic.visual_math import read_chains
from mmreward.metrics import best_of_n_accuracy, first_error_f1, first_error_index, step_auroc
from mmreward.report import controls_table, figure, metrics_table, write_html
from mmreward.types import Process, Sample
from modalities.backbones.colour_bins import ColourBins
from modalities.image import load_image, pil_to_tensor

SPECIAL_TOKENS = ("<pad>", "<unk>")


class PixelStepBackbone(nn.Module, Configurable):
    """A step backbone from pixels: a conv tower, a step encoder and a causal transformer over steps.

    Each step (and the question) is encoded with its ``context`` steps before it: their first
    ``step_tokens`` tokens (words, whole numbers, symbols) are embedded and concatenated in order,
    and an MLP makes one vector of them. A number token's embedding also carries its value and the value's log as two more channels
    (numbers enter as values, as in xVal, Golkar et al., 2023), so a sum and a product are each a
    linear fact about the channels and "4 + 3 = 8" is a slip the MLP can see. A causal transformer then reads ``[image tokens] question step_1 ... step_K``; its state
    at step k has seen the image, the question and steps 1..k, and is step k's feature (as
    ``modalities.backbones.steps.StepBackbone`` reads a causal LM at each step's separator). The
    image tokens are the conv map's global mean, its row means and its column means
    (``1 + 2 * grid`` tokens), so a count, a bar's height and a row's fill are each an average the
    tower can learn. The tower starts from soft colour bins (``modalities.backbones.colour_bins.ColourBins``), whose pooled
    shares also enter the global token, scaled to about one per shape.

    Number readers (``prm_reader.NumberReader``, one per entry of ``readers``) predict each step's
    first or last number from the image and the step with that number masked, with the steps before
    it; the gaps between stated and read numbers (signed, absolute, and whether under 0.5) join each
    step's feature. ``auxiliary_losses`` trains them on the steps labelled correct, weighted by
    ``reading_weight`` (mean squared error in tens).

    Args:
        vocabulary: The words and symbols of the text (``visual_math.VOCABULARY``); others map to <unk>.
        max_number: Numbers 0..max_number are tokens of their own (larger ones share <unk>, with their value).
        image_size: Images are resized to this side.
        channels: Widths of the conv tower's stages after the colour bins (each halves the map).
        hidden_size: Width of the step vectors and the transformer.
        embed_size: Width of a token embedding.
        step_tokens: Tokens of a step the encoder reads (the rest are cut); the question gets twice as many.
        context: The step encoder also reads this many steps before the step (zeros before the first),
            so a wrong carry-over is a local fact too.
        num_layers: Transformer layers.
        num_heads: Attention heads.
        max_steps: Most steps in a chain.
        readers: Which number of each step a reader predicts: ``"first"``, ``"last"``; empty for none.
        reading_weight: Weight of the readers' loss beside the steps' BCE.
        colour_scale: The pooled colour shares are multiplied by this (about one per shape).
        colour_levels: The colour bins start on a grid of this many levels per RGB channel.
    """

    reads_steps = True

    def __init__(
        self,
        vocabulary: list[str],
        max_number: int = 99,
        image_size: int = 48,
        channels: tuple[int, ...] = (16, 32, 64),
        hidden_size: int = 64,
        embed_size: int = 32,
        step_tokens: int = 8,
        context: int = 3,
        num_layers: int = 2,
        num_heads: int = 4,
        max_steps: int = 12,
        readers: tuple[str, ...] = ("first", "last"),
        reading_weight: float = 30.0,
        colour_scale: float = 100.0,
        colour_levels: int = 3,
    ) -> None:
        super().__init__()
        tokens = [*SPECIAL_TOKENS, *(w.lower() for w in vocabulary), *map(str, range(max_number + 1))]
        self.vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
        self.image_size, self.step_tokens, self.max_steps, self.context = (
            image_size,
            step_tokens,
            max_steps,
            context,
        )
        self.stem = ColourBins(colour_levels)  # per-pixel soft colour bins
        self.colour_scale, self.reading_weight = colour_scale, reading_weight
        layers: list[nn.Module] = []
        for i, width in enumerate(channels):
            inputs = channels[i - 1] if i else self.stem.out_channels
            layers += [nn.Conv2d(inputs, width, 3, stride=2, padding=1)]
            layers += [nn.BatchNorm2d(width), nn.ReLU()]
        self.tower = nn.Sequential(*layers)
        self.grid = image_size // 2 ** len(channels)
        self.image_tokens = 1 + 2 * self.grid
        self.project_global = nn.Linear(self.stem.out_channels + channels[-1], hidden_size)
        self.project = nn.Linear(channels[-1], hidden_size)
        self.embed = nn.Embedding(len(self.vocab), embed_size)
        self.encode_step = nn.Sequential(
            nn.Linear((context + 1) * step_tokens * (embed_size + 2), 2 * hidden_size),
            nn.GELU(),
            nn.Linear(2 * hidden_size, hidden_size),
        )
        self.gate = nn.Linear(hidden_size, 2 * hidden_size)
        self.lift = nn.Linear(hidden_size, 2 * hidden_size)
        self.fuse = nn.Sequential(
            nn.Linear(2 * hidden_size, 2 * hidden_size), nn.GELU(), nn.Linear(2 * hidden_size, hidden_size)
        )
        self.encode_question = nn.Sequential(
            nn.Linear(2 * step_tokens * (embed_size + 2), hidden_size), nn.GELU()
        )
        self.position = nn.Embedding(self.image_tokens + 1 + max_steps, hidden_size)
        layer = nn.TransformerEncoderLayer(
            hidden_size, num_heads, 2 * hidden_size, dropout=0.0, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        self.feature_dim = hidden_size
        for which in readers:
            number_at(torch.zeros(1, 1, dtype=torch.long), 0, which)  # an unknown name fails here
        query_size = (context + 1) * step_tokens * (embed_size + 2)
        self.readers = nn.ModuleDict({w: NumberReader(query_size, hidden_size) for w in readers})
        self.gaps = nn.Linear(3 * len(readers), hidden_size) if readers else None
        self.first_number_id = self.vocab["0"]
        self._reads: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "tokens": "words, whole numbers (xVal values), symbols"}

    def tokenize(self, text: str, width: int) -> tuple[list[int], list[float]]:
        """The first ``width`` token ids of ``text`` (lower-cased words, whole numbers, single symbols),
        padded, and each token's numeric value (0 for words)."""
        unk = self.vocab["<unk>"]
        found = re.findall(r"\d+|[a-z]+|[^\sa-z\d]", text.lower())[:width]
        ids = [self.vocab.get(t, unk) for t in found]
        values = [float(t) if t.isdigit() else 0.0 for t in found]
        pad = width - len(ids)
        return ids + [0] * pad, values + [0.0] * pad

    def pixels(self, sample: Sample) -> torch.Tensor:
        """(3, S, S) pixels in [0, 1] of the sample's image (a bad path names the record and field)."""
        if sample.image is None:
            raise ValueError(
                f"{sample.where('image')}: PixelStepBackbone reads an image; the sample has none."
            )
        image = load_image(sample.image, sample, "image")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size))
        return pil_to_tensor(image)

    def collate(self, samples: list[Sample]) -> dict[str, Any]:
        """Step and question token ids and values, pixels and ``step_counts``."""
        if not samples:
            raise ValueError("collate got no samples; pass at least one.")
        width = max(len(s.steps or []) for s in samples)
        step_ids = torch.zeros(len(samples), width, self.step_tokens, dtype=torch.long)
        step_values = torch.zeros(len(samples), width, self.step_tokens)
        question = [self.tokenize(s.prompt or "", 2 * self.step_tokens) for s in samples]
        for i, sample in enumerate(samples):
            if not sample.steps:
                raise ValueError(
                    f"{sample.where('steps')}: a process reward model scores steps; the sample has none."
                )
            if len(sample.steps) > self.max_steps:
                raise ValueError(
                    f"{sample.where('steps')}: {len(sample.steps)} steps, more than max_steps {self.max_steps}. "
                    "Raise max_steps or split the chain."
                )
            for k, step in enumerate(sample.steps):
                ids, values = self.tokenize(step, self.step_tokens)
                step_ids[i, k], step_values[i, k] = torch.tensor(ids), torch.tensor(values)
        return {
            "step_ids": step_ids,
            "step_values": step_values,
            "question_ids": torch.tensor([q[0] for q in question]),
            "question_values": torch.tensor([q[1] for q in question]),
            "pixel_values": torch.stack([self.pixels(s) for s in samples]),
            "step_counts": torch.tensor([len(s.steps) for s in samples]),
        }

    def tokens(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(..., T * (E + 2)) token embeddings, each with its value and log value, concatenated in order."""
        logs = torch.where(values > 0, values.clamp(min=1.0).log(), torch.zeros_like(values))
        return torch.cat([self.embed(ids), values[..., None], logs[..., None]], -1).flatten(-2)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 1 + 2 * grid, hidden) image tokens: the map's mean, row means and column means."""
        colours = self.stem(pixel_values)  # (N, C0, S, S)
        fmap = self.tower(colours)  # (N, C, G, G)
        rows, cols = fmap.mean(3).transpose(1, 2), fmap.mean(2).transpose(1, 2)
        shares = colours.mean((2, 3)) * self.colour_scale
        pooled = self.project_global(torch.cat([shares, fmap.mean((2, 3))], 1))
        return torch.cat([pooled[:, None], self.project(torch.cat([rows, cols], 1))], 1)

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        """(N, S, D) step features; zeros past a chain's last step."""
        ids, values = inputs["step_ids"], inputs["step_values"]
        own = self.tokens(ids, values)  # (N, S, T * (E + 2))
        before = [nn.functional.pad(own, (0, 0, c, 0))[:, : own.shape[1]] for c in range(1, self.context + 1)]
        steps = self.encode_step(torch.cat([own, *before], -1))  # (N, S, D)
        question = self.encode_question(self.tokens(inputs["question_ids"], inputs["question_values"]))
        image = self.image_features(inputs["pixel_values"])  # (N, I, D)
        # a Hadamard fusion with the image's global token (low-rank bilinear pooling, Kim et al., 2017):
        # a step can pick one colour's count out of the pooled features, which attention cannot do
        steps = steps + self.fuse(self.gate(image[:, 0])[:, None] * self.lift(steps))
        x = torch.cat([image, question[:, None], steps], 1)
        x = x + self.position(torch.arange(x.shape[1], device=x.device))[None]
        causal = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device)
        hidden = self.norm(self.transformer(x, mask=causal, is_causal=True))[:, -steps.shape[1] :]
        if self.gaps is not None:
            hidden = hidden + self.gaps(self.read_gaps(ids, values, before, image))
        counts = inputs["step_counts"].to(x.device)
        valid = torch.arange(steps.shape[1], device=x.device)[None] < counts[:, None]
        return hidden * valid[..., None]

    def read_gaps(
        self, ids: torch.Tensor, values: torch.Tensor, before: list[torch.Tensor], image: torch.Tensor
    ) -> torch.Tensor:
        """(N, S, 3 * readers): for each reader, the stated number minus the read one (in tens), its
        absolute value, and whether it is under 0.5; zeros for a step without a number. Keeps the
        readings for ``auxiliary_losses``."""
        self._reads, gaps = [], []
        positions = torch.arange(ids.shape[-1], device=ids.device)
        for which, reader in self.readers.items():
            at = number_at(ids, self.first_number_id, which)
            has = at >= 0
            hit = (positions == at[..., None]) & has[..., None]  # (N, S, T)
            stated = (values * hit).sum(-1)
            masked = self.tokens(ids.masked_fill(hit, self.vocab["<unk>"]), values.masked_fill(hit, 0.0))
            read = reader(torch.cat([masked, *before], -1), image)
            self._reads.append((read, stated, has))
            gap = (stated - read) * has
            gaps += [gap / 10.0, gap.abs(), (gap.abs() < 0.5).to(gap.dtype) * has]
        return torch.stack(gaps, -1)

    def auxiliary_losses(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The readers' loss on the last forward's steps labelled correct (1): their numbers are true.
        ``{}`` without readers."""
        if not self._reads:
            return {}
        correct = labels == 1
        terms = [((read - stated)[has & correct] / 10.0).pow(2) for read, stated, has in self._reads]
        values = torch.cat(terms)
        loss = values.mean() if values.numel() else values.sum()
        return {"reading": self.reading_weight * loss}


# -- the demo -------------------------------------------------------------------------------------

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart" / "prm.yaml"
BEST_OF = tuple(range(1, 33))
ERROR_KINDS = ("misread", "arithmetic", "carry")


def run(output: Path, config: Path = CONFIG, extra_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train, evaluate and write ``output/metrics.json`` and ``output/report.html`` (``run_quickstart``)."""
    metrics = run_quickstart(config, output, extra_args, evaluate_prm, write_report)
    print(
        f"held-out first-error F1: {metrics['heldout']['f1']:.3f} overall, "
        f"{metrics['heldout']['f1_misread']:.3f} on misreads"
    )
    return metrics


def step_probabilities(scorer, records: list[Process], images: list[str] | None = None) -> list[list[float]]:
    """P(step correct) for every step of every chain; ``images`` replaces the chains' images."""
    samples = [
        r.sample if images is None else dataclasses.replace(r.sample, image=images[i])
        for i, r in enumerate(records)
    ]
    return [list(out.steps) for out in scorer.score_samples(samples)]


def chain_figures(probs: list[list[float]], raw: list[dict[str, Any]]) -> dict[str, float]:
    """First-error F1 overall and per error kind (each kind's chains with the correct ones), and step AUROC."""
    predicted = np.array([first_error_index(p) for p in probs])
    true = np.array([r["first_error"] for r in raw])
    kinds = np.array([r["error_kind"] for r in raw])
    overall = first_error_f1(predicted, true)
    figures = {
        "f1": overall["f1"],
        "error_accuracy": overall["error_accuracy"],
        "correct_accuracy": overall["correct_accuracy"],
    }
    for kind in ERROR_KINDS:
        keep = (kinds == kind) | (kinds == "correct")
        figures[f"f1_{kind}"] = first_error_f1(predicted[keep], true[keep])["f1"]
        figures[f"found_{kind}"] = float(np.mean(predicted[kinds == kind] == true[kinds == kind]))
    scores = np.concatenate([np.asarray(p, dtype=float) for p in probs])
    labels = np.concatenate([r["labels"] for r in raw])
    figures["step_auroc"] = step_auroc(scores, labels)
    return figures


def blank_image(data: Path) -> str:
    """A plain image of the world's background colour and size (the image-blind control's input)."""
    path = data / "images" / "blank.png"
    if not path.is_file():
        size = Image.open(next((data / "images" / "test").glob("*.png"))).size
        Image.new("RGB", size, (245, 245, 240)).save(path)
    return str(path)


def vote_curves(
    probs: list[list[float]], raw: list[dict[str, Any]], draws: int = 200, seed: int = 0
) -> dict[str, list[float]]:
    """Best-of-N accuracy for N in ``BEST_OF`` on the pools: PRM-min pick, PRM-weighted vote (each answer
    scored by the sum of its chains' PRM-min), majority vote, and a random pick.

    The PRM-min pick is exact (``best_of_n_accuracy``); the votes average ``draws`` random draws of N
    chains a pool (ties broken at random).
    """
    pools: dict[str, list[int]] = {}
    for i, r in enumerate(raw):
        pools.setdefault(r["pool"], []).append(i)
    rows = list(pools.values())
    score = np.array([[min(probs[i]) for i in row] for row in rows])
    answer = np.array([[raw[i]["answer"] for i in row] for row in rows])
    correct = np.array([[raw[i]["answer_correct"] for i in row] for row in rows], dtype=float)
    truth = np.array([raw[row[0]]["true_answer"] for row in rows])
    rng = np.random.default_rng(seed)
    curves: dict[str, list[float]] = {
        "prm_min": [],
        "prm_weighted_vote": [],
        "majority_vote": [],
        "random": [],
    }
    sizes = [n for n in BEST_OF if n <= score.shape[1]]
    for n in sizes:
        curves["prm_min"].append(best_of_n_accuracy(score, correct, n))
        curves["random"].append(float(correct.mean()))
        hits = {"prm_weighted_vote": 0.0, "majority_vote": 0.0}
        for p in range(len(rows)):
            for _ in range(draws):
                pick = rng.choice(score.shape[1], size=n, replace=False)
                for name, weights in (("prm_weighted_vote", score[p, pick]), ("majority_vote", np.ones(n))):
                    tally: dict[int, float] = {}
                    for a, w in zip(answer[p, pick], weights):
                        tally[int(a)] = tally.get(int(a), 0.0) + float(w) + rng.random() * 1e-9
                    hits[name] += max(tally, key=tally.get) == truth[p]
        for name in hits:
            curves[name].append(hits[name] / (len(rows) * draws))
    curves["n"] = [float(n) for n in sizes]
    curves["majority_wrong_share"] = [
        float(np.mean([Counter(answer[p]).most_common(1)[0][0] != truth[p] for p in range(len(rows))]))
    ]
    return curves


def evaluate_prm(scorer, data: Path) -> dict[str, Any]:
    """Held-out first-error F1 (overall and per error kind), the controls on the same chains, and the
    best-of-N curves on the held-out pools."""
    records = [r for r in read_records(data / "test.jsonl") if isinstance(r, Process)]
    raw = read_chains(data / "test.jsonl")
    heldout = chain_figures(step_probabilities(scorer, records), raw)
    order = derangement([r.sample.image for r in records], seed=0)
    shuffled = [records[j].sample.image for j in order]
    controls = {
        "images_shuffled": chain_figures(step_probabilities(scorer, records, shuffled), raw),
        "blank_image": chain_figures(
            step_probabilities(scorer, records, [blank_image(data)] * len(records)), raw
        ),
    }
    pools = [r for r in read_records(data / "test_pools.jsonl") if isinstance(r, Process)]
    curves = vote_curves(step_probabilities(scorer, pools), read_chains(data / "test_pools.jsonl"))
    return {
        "heldout": heldout,
        "controls": controls,
        "margin_over_controls": {
            name: {k: heldout[k] - v for k, v in figures.items()} for name, figures in controls.items()
        },
        "best_of_n": curves,
        "best_of_8": {k: v[7] for k, v in curves.items() if len(v) >= 8 and k != "n"},
        "heldout_chains": len(records),
        "pools": len({r.id.rsplit("-", 1)[0] for r in pools}),
        "model_input": "the rendered image and the text (question and steps); no scene values",
    }


def bon_plot(curves: dict[str, list[float]]) -> str:
    """The best-of-N figure as an inline PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    for name, label in (
        ("prm_min", "PRM-min"),
        ("prm_weighted_vote", "PRM-weighted vote"),
        ("majority_vote", "majority vote"),
        ("random", "random"),
    ):
        ax.plot(curves["n"], curves[name], marker=".", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"N (chains drawn from a pool of {int(curves['n'][-1])})")
    ax.set_ylabel("final-answer accuracy")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def write_report(path: Path, scorer, metrics: dict[str, Any], data: Path, chains: int = 8) -> Path:
    """The report: held-out figures beside their controls, the best-of-N plot, and example chains."""
    names = ["f1", "f1_misread", "f1_arithmetic", "f1_carry", "step_auroc"]
    table = controls_table(
        {n: metrics["heldout"][n] for n in names},
        {c: {n: f[n] for n in names} for c, f in metrics["controls"].items()},
        {
            "images_shuffled": "each chain read with another chain's image",
            "blank_image": "each chain read with a plain background image (text only)",
        },
    )
    raw = read_chains(data / "test.jsonl")[:chains]
    records = [r for r in read_records(data / "test.jsonl") if isinstance(r, Process)][:chains]
    rows = []
    for r, probs in zip(raw, step_probabilities(scorer, records)):
        steps = "".join(
            f"<li>{html.escape(s)} <b>{p:.2f}</b>{' (true first error)' if k == r['first_error'] else ''}</li>"
            for k, (s, p) in enumerate(zip(r["steps"], probs))
        )
        rows.append(
            f"<tr><td>{figure(data / r['image'], r['error_kind'], size=96)}</td>"
            f"<td style='text-align:left'>{html.escape(r['prompt'])}<ol>{steps}</ol></td></tr>"
        )
    notes = (
        "<p>Controls run on the same held-out chains in the same run. With images shuffled the "
        "misread F1 should fall toward chance while the arithmetic and carry-over F1 stay: the "
        "model reads the pixels for the one and the text for the others.</p>"
    )
    return write_html(
        path,
        "mmreward quick start: visual process reward model",
        [
            ("Held-out first-error F1 and controls", notes + table),
            ("Best-of-N on held-out pools (majority voting often wrong)", bon_plot(metrics["best_of_n"])),
            ("Held-out metrics", metrics_table(metrics)),
            ("Held-out chains (P(step correct) in bold)", f"<table>{''.join(rows)}</table>"),
        ],
    )
