"""Where the pixel judge's misses come from: its eye (the description) or its comparison (the judge pass).

For a trained quick-start judge (a run folder of ``integrations.demos.judge.train_quickstart``, or one
trained here with ``--train``) it reports, by corruption kind, on the held-out prompts:

- ``end_to_end``: the judge as the demo runs it (describe the image, then judge the description),
  beside its control (the same judge with each image under another prompt's text);
- ``eye``: the share of its own descriptions equal to the world's caption in the objects part (before
  ``Quality:``) and in the quality word (``clean``, ``blurred``, ...; the severity word is not needed
  by the critique and is not compared);
- ``comparison``: the judge pass alone, given the world's caption instead of its own description, on
  the held-out split and on as many training examples (a comparison that misses on training examples
  has not been learned; one that misses only on held-out ones does not generalise).

The world's captions reach the model only in ``comparison``, which measures the judge pass, not the
judge: no figure of the judge itself comes from it. One JSON line per run is appended to
``benchmarks/results/judge_diagnosis.jsonl``.

    python benchmarks/judge_diagnosis.py RUN_DIR
    python benchmarks/judge_diagnosis.py --train runs/diag-s3 --seed 3 --caption-steps 3200 --critique-steps 5000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "judge_diagnosis.jsonl"


def objects_and_quality(description: str) -> tuple[str, str]:
    """A description's objects part and its quality word (``"a red circle. Quality: slightly blurred."``
    -> ``("a red circle", "blurred")``)."""
    objects, _, quality = description.partition("Quality:")
    words = quality.strip().rstrip(".").split()
    return objects.strip().rstrip(".").strip(), (words[-1] if words else "")


def diagnose(run: Path) -> dict:
    """The three views of a run's judge (see the module docstring)."""
    from integrations.demos.judge import evaluate, quickstart_judge, shuffled_images
    from judges.critique_data import read_examples
    from judges.evaluation import evaluate_critique_judge, rates_by_kind
    from judges.pixel_training import pixel_sample

    judge = quickstart_judge(run / "model")
    test = read_examples(run / "data" / "test.jsonl")
    kinds = [e.corruption for e in test]
    seen = evaluate(judge, test, run / "data")
    blind = evaluate(judge, test, run / "data", shuffled_images(test))  # the control: images shuffled
    said = [j.text.removeprefix("Image: ").split(" Seen:")[0] for j in seen.judgements]
    objects = [objects_and_quality(s)[0] == objects_and_quality(e.description)[0] for s, e in zip(said, test)]
    quality = [objects_and_quality(s)[1] == objects_and_quality(e.description)[1] for s, e in zip(said, test)]
    report = {
        "run": str(run),
        "end_to_end": {
            "spearman": round(seen.spearman, 3),
            "hit_rate": round(seen.hit_rate, 3),
            "parse_failure_rate": round(seen.parse_failure_rate, 3),
            "hit_rate_by_kind": _rounded(seen.hit_rate_by_corruption),
            "control_shuffled_images": {
                "spearman": round(blind.spearman, 3),
                "hit_rate": round(blind.hit_rate, 3),
            },
        },
        "eye": {
            "objects_exact": round(sum(objects) / len(objects), 3),
            "objects_exact_by_kind": _rounded(rates_by_kind(objects, kinds)),
            "quality_word_by_kind": _rounded(rates_by_kind(quality, kinds)),
        },
        "comparison": {},
    }
    train = read_examples(run / "data" / "train.jsonl")[: len(test)]
    for split, examples in (("test", test), ("train", train)):
        samples = judge.as_text(
            [pixel_sample(e, run / "data") for e in examples], [e.description for e in examples]
        )
        _, judgements = judge.judge_pass(samples)
        result = evaluate_critique_judge(judge, examples, judgements)
        report["comparison"][split] = {
            "spearman": round(result.spearman, 3),
            "hit_rate": round(result.hit_rate, 3),
            "hit_rate_by_kind": _rounded(result.hit_rate_by_corruption),
        }
    return report


def _rounded(rates: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a judge run folder (model/ and data/)")
    parser.add_argument("--train", action="store_true", help="train the quick-start judge into RUN first")
    parser.add_argument(
        "--seed", type=int, default=0, help="with --train: the world's and the training's seed"
    )
    parser.add_argument(
        "--caption-steps", type=int, default=None, help="with --train: stage-1 steps (default the demo's)"
    )
    parser.add_argument(
        "--critique-steps", type=int, default=None, help="with --train: stage-2 steps (default the demo's)"
    )
    parser.add_argument("--label", default="", help="a note kept with the result (e.g. how RUN was trained)")
    args = parser.parse_args()

    import torch

    from integrations.demos.judge import QUICKSTART, train_quickstart

    torch.set_num_threads(1)
    report: dict = {"label": args.label} if args.label else {}
    if args.train:
        settings = {
            "seed": args.seed,
            "caption_steps": args.caption_steps or QUICKSTART["caption_steps"],
            "critique_steps": args.critique_steps or QUICKSTART["critique_steps"],
        }
        start = time.perf_counter()
        train_quickstart(args.run, **settings)
        report |= {**settings, "train_seconds": round(time.perf_counter() - start)}
    report |= diagnose(args.run)
    print(json.dumps(report, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
