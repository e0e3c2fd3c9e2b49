"""``mmreward serve``: any reward (``mr.load(DIR)`` or a reward class) behind HTTP, on LitServe.

Endpoints (bodies in ``integrations.serving.reward_requests``; docs/serving.md has examples):

- ``POST /score``: ``{"samples": [...]}`` -> ``{"scores", "outputs"}``; OpenRLHF's remote reward-model
  body ``{"query", "prompts", "labels"}`` -> ``{"rewards", "scores", "extra_logs"}`` on the same path.
- ``POST /rank``: ``{"prompt", "candidates"}`` -> ``{"ranking" (best first), "scores"}``.
- ``GET /health``: 200 once the model is loaded.

LitServe batches concurrent requests (``max_batch_size``, ``batch_timeout``): the samples of every
request in a batch go to the reward in one ``score_samples`` call. A request is checked when it
arrives (schema, sample count, inline media decoded, paths confined to ``--media-root``), so a bad
one gets its 4xx before it can reach a batch; if a batch still fails (a file that will not decode, a
non-finite score), its requests are scored one by one and only the failing one gets the error.
Binds 127.0.0.1 unless told otherwise; ``--api-key`` / ``$MMREWARD_API_KEY`` requires
``Authorization: Bearer <key>`` on every endpoint (compared in constant time).
"""

# no `from __future__ import annotations`: LitServe and FastAPI read the request classes from the
# annotations of decode_request and of the /rank route at run time
import argparse
import hmac
import math
import os
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mmreward.optional import require

ls = require("litserve", "serve")
from fastapi import Depends, HTTPException, Request  # noqa: E402  (litserve brings fastapi)
from fastapi.responses import JSONResponse  # noqa: E402
from litserve.server import RegularRequestHandler  # noqa: E402

from integrations.serving.reward_requests import (  # noqa: E402
    MAX_SAMPLES,
    RankRequest,
    ScoreRequest,
    VideoBytes,
    set_max_samples,
)
from mmreward.data.validation import set_media_policy  # noqa: E402
from mmreward.protocols import score_outputs  # noqa: E402
from mmreward.types import RewardOutput, Sample  # noqa: E402

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
API_KEY_ENV = "MMREWARD_API_KEY"


@dataclass
class RewardSource:
    """What the worker loads: a saved model (``model``) or a reward class (``reward`` + ``reward_args``).

    ``dtype`` is a ``--dtype`` choice (``auto``, ``fp32``, ``bf16``: ``mmreward.cli_options.DTYPES``),
    the saved model's compute dtype; a reward class sets its own, so it takes only ``auto``.
    """

    model: str | None = None
    reward: str | None = None
    reward_args: str = "{}"
    device: str | None = None
    batch_size: int = 32
    trust_config: bool = False
    dtype: str = "auto"

    def __post_init__(self) -> None:
        from mmreward.cli_options import DTYPES

        if self.dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r}; use one of: {', '.join(sorted(DTYPES))}.")
        if self.reward and self.dtype != "auto":
            raise ValueError(
                f"dtype={self.dtype!r} applies to a saved model (model=...), not to the reward class "
                f"{self.reward!r}; leave dtype at 'auto' and set the precision in the class's own args."
            )

    def build(self, device: str) -> Any:
        """The reward, on ``device`` unless ``self.device`` names another."""
        from mmreward.cli_options import build_reward, torch_dtype
        from mmreward.scoring import load

        if self.reward:
            return build_reward(self.reward, self.reward_args)
        return load(
            self.model,
            device=self.device or device,
            batch_size=self.batch_size,
            dtype=torch_dtype(self.dtype),
            trust_config=self.trust_config,
        )


@dataclass
class Decoded:
    """One request as the worker holds it: its kind (``score``, ``openrlhf``, ``rank``) and samples."""

    kind: str
    samples: list[Sample]


class RewardAPI(ls.LitAPI):
    """The LitServe API: decode a checked request, score a batch of requests at once, encode each."""

    def __init__(
        self,
        source: RewardSource,
        api_key: str | None = None,
        media_root: str | None = None,
        max_pixels: int | None = None,
        max_batch_size: int = 16,
        batch_timeout: float = 0.01,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/score")
        self.source, self.api_key = source, api_key
        self.policy = {"media_root": media_root, **({"max_pixels": max_pixels} if max_pixels else {})}

    def setup(self, device: str) -> None:
        set_media_policy(**self.policy)
        self.reward = self.source.build(device)

    def authorize(self, request: Request) -> None:
        """A FastAPI dependency of every route: the bearer token, when the server has one."""
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            raise HTTPException(
                401,
                "Missing or wrong API key; send the header 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def decode_request(self, request: ScoreRequest) -> Decoded:
        if isinstance(request, RankRequest):
            return Decoded("rank", request.to_samples())
        return Decoded("score" if request.samples is not None else "openrlhf", request.to_samples())

    def predict(self, batch: Decoded | list[Decoded]) -> Any:
        if isinstance(batch, Decoded):  # max_batch_size=1: LitServe's single-request loop
            return self._score([batch])[0]
        return self._score(batch)

    def _score(self, requests: list[Decoded]) -> list[list[RewardOutput] | HTTPException]:
        """All requests' samples in one call; if that fails, each request alone, to find the bad one."""
        try:
            outputs = self._call([s for r in requests for s in r.samples])
        except Exception as err:
            if len(requests) == 1:
                return [_failure(err)]
            return [self._score([r])[0] for r in requests]
        results, start = [], 0
        for request in requests:
            results.append(outputs[start : start + len(request.samples)])
            start += len(request.samples)
        return results

    def _call(self, samples: list[Sample]) -> list[RewardOutput]:
        with tempfile.TemporaryDirectory(prefix="mmreward-serve-") as tmp:
            samples = [_written(s, Path(tmp), i) for i, s in enumerate(samples)]
            return score_outputs(self.reward, samples)

    def encode_response(self, output: list[RewardOutput] | HTTPException, context: dict | None = None) -> Any:
        if isinstance(output, HTTPException):
            return JSONResponse({"detail": output.detail}, status_code=output.status_code)
        return encode_outputs(output)


def _written(sample: Sample, directory: Path, index: int) -> Sample:
    """``sample`` with an inline video written to a file in ``directory`` (decoders read files)."""
    if not isinstance(sample.video, VideoBytes):
        return sample
    path = directory / f"video_{index}{sample.video.suffix}"
    path.write_bytes(sample.video.data)
    return replace(sample, video=str(path))


def _failure(err: Exception) -> HTTPException:
    """The status a failed request gets: bad input (ours or the reward's) 422, anything else 500."""
    from mmreward.cli_errors import is_bad_input

    message = " ".join(str(err).split()) or type(err).__name__
    if is_bad_input(err):
        return HTTPException(422, f"Cannot score this request: {message}")
    return HTTPException(500, f"The reward failed on this request: {type(err).__name__}: {message}")


def encode_outputs(outputs: Sequence[RewardOutput]) -> dict[str, Any]:
    """The response body: ``scores`` (and OpenRLHF's ``rewards``), each output's fields, provenance once.

    JSON has no NaN: a sample the reward could not score gets ``null`` and its ``failure`` reason.
    """
    fields = [_output_json(o) for o in outputs]
    scores = [f.get("score") for f in fields]
    return {
        "scores": scores,
        "rewards": scores,
        "extra_logs": {},
        "outputs": fields,
        "provenance": outputs[0].provenance if outputs else {},
    }


def _output_json(output: RewardOutput) -> dict[str, Any]:
    def finite(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        return [finite(v) for v in value] if isinstance(value, list) else value

    fields = {k: finite(v) for k, v in asdict(output).items() if v is not None and k != "provenance"}
    fields.setdefault("score", None)
    if output.provenance.get("failure"):
        fields["failure"] = output.provenance["failure"]
    return fields


def rank_response(body: dict[str, Any]) -> dict[str, Any]:
    """``/rank``'s body from the scored candidates: indices best first (unscored last), and the scores."""
    scores = body["scores"]
    order = sorted(range(len(scores)), key=lambda i: (scores[i] is None, -(scores[i] or 0.0)))
    return {"ranking": order, "scores": scores, "outputs": body["outputs"], "provenance": body["provenance"]}


def create_server(
    api: RewardAPI, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, timeout: float = 60.0, **server_args: Any
) -> Any:
    """A ``LitServer`` for ``api`` with ``/rank`` beside ``/score`` (same worker, same batches)."""
    server = ls.LitServer(api, max_payload_size=max_body_bytes, timeout=timeout, **server_args)
    handler = RegularRequestHandler(api, server)

    async def rank(request: RankRequest) -> Any:
        response = await handler.handle_request(request, RankRequest)
        return rank_response(response) if isinstance(response, dict) else response

    server.app.add_api_route("/rank", rank, methods=["POST"], dependencies=[Depends(api.authorize)])
    return server


def build_parser() -> argparse.ArgumentParser:
    """``mmreward serve``'s options."""
    from mmreward.cli_errors import DEBUG_HELP
    from mmreward.cli_options import TRUST_HELP, HelpFormatter, add_dtype_option

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="mmreward serve",
        description="Serve a reward over HTTP (LitServe): POST /score and /rank with prompts and images or "
        "videos (inline as data:...;base64, URLs, or paths under --media-root), OpenRLHF's remote reward-model "
        "body on /score, GET /health. Concurrent requests are batched into one forward. docs/serving.md.",
        epilog=f"Binds {DEFAULT_HOST} unless --host says otherwise; set --api-key (or ${API_KEY_ENV}) before "
        "binding anything wider.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        metavar="DIR",
        help="a saved model: a folder from save_pretrained / mmreward fit, or a .ckpt",
    )
    source.add_argument(
        "--reward", metavar="CLASS_PATH",
        help="instead of --model, the import path of any reward class (mmreward.protocols.Reward)",
    )  # fmt: skip
    parser.add_argument(
        "--reward-args", default="{}", metavar="JSON", help="the --reward class's init args as a JSON object"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine only)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV), metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' on every request (default ${API_KEY_ENV}; unset: open)",
    )  # fmt: skip
    parser.add_argument(
        "--media-root",
        default=None,
        metavar="DIR",
        help="read media paths under DIR only (default: no paths, inline media only)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="refuse images of more than N pixels (default 64 Mpx)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=16,
        metavar="N",
        help="most requests batched into one forward (default 16; 1 turns batching off)",
    )
    parser.add_argument(
        "--batch-timeout",
        type=float,
        default=0.01,
        metavar="S",
        help="seconds a batch waits to fill (default 0.01)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        metavar="N",
        help="samples per forward inside a batch (default 32)",
    )
    parser.add_argument(
        "--max-samples",
        type=int,
        default=MAX_SAMPLES,
        metavar="N",
        help=f"most samples per request (default {MAX_SAMPLES}; more: 422)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="N",
        help="largest request body (default 32 MiB; more: 413)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds a request may wait before a 504 (default 60)",
    )
    parser.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help="where the model runs (default: cuda when available, else cpu)",
    )
    add_dtype_option(parser, note="; --model only, default auto")
    parser.add_argument("--trust-config", action="store_true", help=TRUST_HELP)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``mmreward serve``'s options, parsed; an argparse error (exit 2) for ``--dtype`` or ``--device``
    with ``--reward``."""
    from mmreward.cli_options import refuse_model_options_with_reward

    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_model_options_with_reward(parser, args)
    return args


def api_from_args(args: argparse.Namespace) -> RewardAPI:
    """The ``RewardAPI`` that parsed ``mmreward serve`` options describe (paths checked now, exit 2 if bad)."""
    if args.model and not Path(args.model).exists():
        raise FileNotFoundError(
            f"--model {args.model!r} does not exist; pass a folder from save_pretrained or a .ckpt."
        )
    if args.media_root and not Path(args.media_root).is_dir():
        raise FileNotFoundError(f"--media-root {args.media_root!r} is not a folder.")
    set_max_samples(args.max_samples)
    set_media_policy(
        media_root=args.media_root, **({"max_pixels": args.max_pixels} if args.max_pixels else {})
    )
    source = RewardSource(
        args.model, args.reward, args.reward_args, args.device, args.batch_size, args.trust_config,
        dtype=args.dtype or "auto",
    )  # fmt: skip
    return RewardAPI(
        source, args.api_key, args.media_root, args.max_pixels, args.max_batch_size, args.batch_timeout
    )


def main(argv: list[str]) -> int:
    """``mmreward serve ...`` (the ``mmreward.commands`` entry point): serve until interrupted."""
    args = parse_args(argv)
    server = create_server(api_from_args(args), args.max_body_bytes, args.timeout)
    # LitServe stops its workers on Ctrl+C only; on SIGTERM they would outlive this process
    _interrupt.pid = os.getpid()
    signal.signal(signal.SIGTERM, _interrupt)
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM as Ctrl+C in the server's process; a forked HTTP process that LitServe stops exits quietly."""
    if os.getpid() != _interrupt.pid:
        raise SystemExit(0)
    raise KeyboardInterrupt
