"""The quick-start judge judges from pixels: after two-stage SFT it describes the rendered image
(never given a scene text), judges its own description against the prompt, reaches issue 12's bars on
held-out prompts, and its scores fall apart when the images are shuffled.

One training run per session (``tests.judge_helpers.trained_judge``, the demo's settings) feeds every
test here but the CLI one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("fastapi")
pytest.importorskip("open_clip")

from integrations.demos.judge import (  # noqa: E402
    QUICKSTART,
    described_colours_rate,
    evaluate,
    quickstart_judge,
    shuffled_images,
)
from integrations.serving.openai_server import create_app, serve_in_thread  # noqa: E402
from judges.backends import OpenAIBackend  # noqa: E402
from judges.composite_backend import CompositeBackend  # noqa: E402
from judges.critique_data import read_examples  # noqa: E402
from judges.describe_first import DESCRIBE_REQUEST, DescribeFirstJudge  # noqa: E402
from judges.pixel_training import pixel_sample  # noqa: E402
from judges.scaling import ScaledJudge  # noqa: E402
from tests.judge_helpers import trained_judge  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_judge(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def held_out(run):
    return read_examples(run / "data" / "test.jsonl")


@pytest.fixture(scope="module")
def local_judge(run):
    return quickstart_judge(run / "model")


@pytest.fixture(scope="module")
def evaluations(run, held_out, local_judge):
    untrained = quickstart_judge(run / "base")
    root = run / "data"
    return (
        evaluate(local_judge, held_out, root),
        evaluate(untrained, held_out, root),
        evaluate(local_judge, held_out, root, shuffled_images(held_out)),
    )


class RecordingBackend:
    """Passes requests on to a backend and keeps every request and output text, in order."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []

    def generate(self, requests, params):
        generations = self.backend.generate(requests, params)
        self.calls.append((requests, [g.text for g in generations]))
        return generations


def test_the_judge_gets_the_image_and_no_scene_text(run, held_out):
    """The first pass gets the image and the instruction only; the second gets the prompt and the
    judge's own first-pass text, no image: the pixels are the only way in for what the image shows."""
    recorder = RecordingBackend(CompositeBackend(str(run / "model"), device="cpu"))
    examples = held_out[:6]
    DescribeFirstJudge(recorder, max_new_tokens=QUICKSTART["max_new_tokens"]).judge(
        [pixel_sample(e, run / "data") for e in examples]
    )
    (first, described), (second, _) = recorder.calls
    assert len(first) == len(second) == len(examples)
    for request in first:
        parts = request[-1]["content"]
        assert [p["type"] for p in parts] == ["image", "text"] and parts[1]["text"] == DESCRIBE_REQUEST
        assert parts[0]["image"].endswith(".png")
    for request, example, description in zip(second, examples, described):
        text = request[-1]["content"]
        assert isinstance(text, str)  # no image part
        assert example.prompt in text and f"Response: {description.strip()}\n" in text
    # the shuffled control gives every example an image of another prompt
    images = shuffled_images(held_out)
    owner = {e.image: e.prompt for e in held_out}
    assert all(owner[img] != e.prompt for img, e in zip(images, held_out))


def test_sft_teaches_the_judge_the_output_format(evaluations, held_out):
    trained, untrained, _ = evaluations
    assert sum(j.method == "logprobs" for j in trained.judgements) >= 0.9 * len(held_out)
    assert untrained.hit_rate <= 0.1 and untrained.parse_failure_rate >= 0.9, untrained.metrics()
    # faithful images recognised: 0.970 +- 0.022 over five seeds (mean - 3 sd 0.905)
    assert trained.hit_rate_by_corruption["none"] >= 0.75, trained.metrics()


def test_the_judge_looks_at_the_image(evaluations, held_out):
    """Its own description follows the image: with the images shuffled across prompts, the colours it
    names match the caption of the render it was meant to judge far less often, and its hit rate falls."""
    trained, _, shuffled = evaluations
    seeing, blind = described_colours_rate(trained, held_out), described_colours_rate(shuffled, held_out)
    assert seeing >= 0.8 and blind <= seeing - 0.5, (seeing, blind)
    assert shuffled.hit_rate <= trained.hit_rate - 0.5, (trained.metrics(), shuffled.metrics())
    # issue 13: the margin over the control (0.765 +- 0.062 over five seeds, mean - 3 sd 0.580) is what
    # the figure claims
    assert trained.spearman - shuffled.spearman >= 0.3, (trained.metrics(), shuffled.metrics())


def test_trained_judge_reaches_the_issue_bar(evaluations):
    """Issue 12: from pixels, Spearman >= 0.6, critique hit rate >= 0.6, parse failures <= 1%, and
    Spearman under 0.2 with the images shuffled across prompts. Five seeds on 600 held-out candidates
    (docs/learning-figures.md, 2026-12-04): Spearman 0.797 +- 0.048 (mean - 3 sd 0.653), hit rate
    0.909 +- 0.038 (0.794), parse failures 0.001 +- 0.002 (mean + 3 sd 0.008), shuffled-image
    Spearman 0.031 +- 0.037 (0.143): every bar holds at 3 sd."""
    trained, _, shuffled = evaluations
    assert trained.spearman >= 0.6, trained.metrics()
    assert trained.hit_rate >= 0.6, trained.metrics()
    assert trained.parse_failure_rate <= 0.01, trained.metrics()
    assert not shuffled.spearman >= 0.2, shuffled.metrics()


def test_local_and_http_backends_give_the_same_expected_scores(run, held_out, local_judge):
    samples = [pixel_sample(e, run / "data") for e in held_out[:12]]
    local = local_judge.judge(samples)
    backend = CompositeBackend(str(run / "model"), device="cpu")
    with serve_in_thread(create_app(backend, "judge")) as url:
        remote = DescribeFirstJudge(
            OpenAIBackend(url, model="judge", concurrency=4), max_new_tokens=QUICKSTART["max_new_tokens"]
        ).judge(samples)
    assert sum(j.score is not None for j in local) >= 10
    for a, b in zip(local, remote):  # the image travels as a data: URL and is decoded by the server
        assert a.text.startswith("Image: ")
        assert b.method == a.method and b.critique == a.critique
        if a.score is None:
            assert b.score is None
        else:
            assert b.score == pytest.approx(a.score, abs=1e-4)


def test_sampled_judgements_vary_and_aggregate_per_input(run, held_out, local_judge):
    examples = held_out[:20]
    scaled = ScaledJudge(local_judge, k=4, temperature=1.0, aggregate="mean", seed=0).judge(
        [pixel_sample(e, run / "data") for e in examples]
    )
    assert all(len(r.samples) == 4 for r in scaled)
    assert len({s.text for r in scaled for s in r.samples}) > len(examples)  # sampling changed some outputs
    for r in scaled:
        scores = [s.score for s in r.samples if s.score is not None]
        assert r.failures == 4 - len(scores)
        if scores:
            assert r.score == pytest.approx(sum(scores) / len(scores))
            assert 1.0 <= r.score <= 5.0


@pytest.mark.parametrize(
    ("config", "steps"),
    [
        ("configs/composite/judge_caption.yaml", "caption_steps"),
        ("configs/quickstart/judge.yaml", "critique_steps"),
    ],
)
def test_the_two_stage_configs_say_what_the_demo_trains(config, steps):
    """The configs and ``QUICKSTART`` (what the demo, this file's judge and the five-seed figures
    train) are two copies of one recipe: they must not drift apart."""
    import yaml

    cfg = yaml.safe_load(Path(config).read_text())
    model, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
    assert cfg["trainer"]["max_steps"] == model["scheduler"]["init_args"]["total_steps"] == QUICKSTART[steps]
    assert (
        model["optimizer"]["init_args"]["lr"] == model["scheduler"]["init_args"]["max_lr"] == QUICKSTART["lr"]
    )
    assert data["batch_size"] == QUICKSTART["batch_size"]
    assert data.get("caption_replay", QUICKSTART["caption_replay"]) == QUICKSTART["caption_replay"]
    world = data["synthetic"]["init_args"]["world"]["init_args"]
    assert world == {k: QUICKSTART[k] for k in ("train_prompts", "val_prompts", "test_prompts")}


def test_two_stage_configs_fit_and_export_through_the_cli(tmp_path):
    from mmreward.cli import main

    world = "--data.init_args.synthetic.init_args.world.init_args"
    small = [f"{world}.train_prompts=3", f"{world}.val_prompts=2", f"{world}.test_prompts=1"]
    data = f"--data.init_args.data_root={tmp_path / 'data'}"
    stage1, stage2 = tmp_path / "caption", tmp_path / "critique"
    main(["fit", "--config", "configs/composite/judge_caption.yaml", "--trainer.fast_dev_run=true",
          f"--trainer.default_root_dir={stage1}", data, *small])  # fmt: skip
    main(["fit", "--config", "configs/quickstart/judge.yaml", "--trainer.fast_dev_run=true",
          f"--trainer.default_root_dir={stage2}", f"--model.init_args.model={stage1 / 'model'}", data, *small])  # fmt: skip
    [example, *_] = read_examples(tmp_path / "data" / "test.jsonl")
    backend = RecordingBackend(CompositeBackend(str(stage2 / "model"), device="cpu"))
    assert {" red", " circle", "Score", "Seen", " 5", "<image>"} <= set(backend.backend.tokenizer.get_vocab())
    [judgement] = DescribeFirstJudge(backend, max_description_tokens=4, max_new_tokens=4).judge(
        [pixel_sample(example, tmp_path / "data")]
    )
    [[description]] = backend.calls[0][1:]
    assert judgement.text.startswith(f"Image: {description.strip()} ") and len(backend.calls) == 2


def test_demo_report_writes_metrics_with_the_control_and_an_html_page(run, tmp_path):
    import json

    from integrations.demos.judge import write_report

    metrics = write_report(run, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["trained"]["spearman"] == pytest.approx(metrics["trained"]["spearman"])
    assert "control_shuffled_images" in saved and "pixels" in saved["judge_input"]
    margin = saved["margin_over_controls"]["shuffled_images_spearman"]
    assert margin == pytest.approx(
        saved["trained"]["spearman"] - saved["control_shuffled_images"]["spearman"]
    )
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 15
    assert "critique_hit_rate" in page and "shuffled" in page


@pytest.fixture(scope="module")
def critique_rm_figures(run, held_out, tmp_path_factory):
    """The critique reward model trained on top of the session's judge, on held-out prompts from
    pixels, and on the same candidates with the images shuffled across prompts (the control)."""
    import torch

    from judges.critique_rm import CritiqueRewardModel
    from judges.critique_rm_training import evaluate_critique_rm, train_critique_rm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the figures in docs/learning-figures.md are one thread's
    try:
        rm = CritiqueRewardModel(train_critique_rm(run, tmp_path_factory.mktemp("critique-rm")) / "model")
    finally:
        torch.set_num_threads(threads)
    root = run / "data"
    return evaluate_critique_rm(rm, held_out, root), evaluate_critique_rm(
        rm, held_out, root, shuffled_images(held_out)
    )


def test_the_critique_reward_model_ranks_held_out_candidates_from_pixels(critique_rm_figures):
    """Issue 12, item 4: the head on the judge's own critique orders one prompt's candidates, and the
    order falls to chance when the images are shuffled. Five seeds (docs/learning-figures.md,
    2026-12-04, 600 held-out candidates): pair accuracy within a prompt 0.860 +- 0.024 (mean - 3 sd
    0.789), shuffled 0.498 +- 0.011, margin 0.362 +- 0.028 (0.277); Spearman margin 0.743 +- 0.071
    (0.531). No bar is above mean - 3 sd."""
    seen, blind = critique_rm_figures
    figures = {k: v for k, v in seen.items() if k != "outputs"}
    assert seen["pair_accuracy"] >= 0.75, figures
    assert abs(blind["pair_accuracy"] - 0.5) <= 0.1, blind["pair_accuracy"]
    assert seen["pair_accuracy"] - blind["pair_accuracy"] >= 0.15, figures
    assert seen["spearman"] - blind["spearman"] >= 0.4, figures
    assert all(o.text.startswith("Image: ") for o in seen["outputs"])
    read = sum("score_token" in (o.aspects or {}) for o in seen["outputs"])  # the judge's score, beside
    assert read >= 0.99 * len(seen["outputs"]), read
