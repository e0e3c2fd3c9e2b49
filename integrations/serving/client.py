"""Clients of ``mmreward serve``, sync and async; each is itself a reward (``score_samples``).

``RewardClient(url).score_samples(samples)`` sends the samples to ``POST /score`` and returns one
``RewardOutput`` each, so anything that takes an ``mmreward.protocols.Reward`` (best-of-N, the
diffusers ``RewardFn``, the robot ``ActionSelector``, ``Transformed``) takes a served model:

    >>> reward = RewardClient("http://127.0.0.1:8000", api_key="...")
    >>> best_of_n(reward, groups)

Media travel inline: PIL images, uint8 arrays and image files are sent as PNG/JPEG data URLs, video
files as ``data:video/...;base64,``. Pass ``server_paths=True`` to send paths as they are, for the
server to read under its ``--media-root`` instead.
"""

from __future__ import annotations

import base64
import io
import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmreward.optional import require
from mmreward.types import RewardOutput, Sample

MEDIA = ("image", "source_image", "video")


def data_url(value: Any, kind: str = "image") -> str:
    """A ``data:<mime>;base64,`` URL for a PIL image, an (H, W[, 3]) uint8 array, or a file."""
    if isinstance(value, (str, Path)):
        path = Path(value)
        mime = mimetypes.guess_type(path.name)[0] or ("video/mp4" if kind == "video" else "image/png")
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
    from PIL import Image

    image = value if isinstance(value, Image.Image) else Image.fromarray(value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def sample_json(sample: Sample, server_paths: bool = False) -> dict[str, Any]:
    """The wire form of ``sample`` (prompt, response, media); refuses fields the server does not take."""
    unsupported = [n for n in ("point_cloud", "action", "steps") if getattr(sample, n) is not None]
    if unsupported:
        raise ValueError(
            f"{sample.where()}: the reward server takes prompts, responses, images and videos; "
            f"this sample has {unsupported}. Score it in process (mmreward.load) instead."
        )

    def encode(value: Any, kind: str) -> str:
        if server_paths and isinstance(value, (str, Path)):
            return str(value)
        return data_url(value, kind)

    body: dict[str, Any] = {"prompt": sample.prompt}
    if sample.response is not None:
        body["response"] = sample.response
    for name in MEDIA:
        value = getattr(sample, name)
        if value is not None:
            body[name] = encode(value, "video" if name == "video" else "image")
    if sample.images is not None:
        body["images"] = [encode(v, "image") for v in sample.images]
    return body


def outputs_from(body: dict[str, Any]) -> list[RewardOutput]:
    """``RewardOutput``s from a ``/score`` response body."""
    provenance = dict(body.get("provenance") or {})
    outputs = []
    for fields in body["outputs"]:
        fields, prov = dict(fields), dict(provenance)
        if "failure" in fields:
            prov["failure"] = fields.pop("failure")
        score = fields.pop("score")
        outputs.append(
            RewardOutput(score=float("nan") if score is None else score, **fields, provenance=prov)
        )
    return outputs


def raise_for(response: Any) -> dict[str, Any]:
    """The JSON body of a 2xx response; otherwise an error carrying the server's reason."""
    if response.status_code < 400:
        return response.json()
    try:
        reason = response.json().get("detail", response.text)
    except ValueError:
        reason = response.text
    message = f"The reward server answered {response.status_code}: {reason}"
    if response.status_code == 401:
        raise PermissionError(message + " (pass api_key=, or set it on the server side with --api-key).")
    if response.status_code < 500:
        raise ValueError(message)
    raise RuntimeError(message)


class _Base:
    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        batch_size: int = 64,
        server_paths: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout, self.batch_size, self.server_paths = timeout, batch_size, server_paths
        self.httpx = require("httpx", "serve")

    def _chunks(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        bodies = [sample_json(s, self.server_paths) for s in samples]
        return [{"samples": bodies[i : i + self.batch_size]} for i in range(0, len(bodies), self.batch_size)]

    def _rank_body(self, prompt: str, candidates: Sequence[Sample]) -> dict[str, Any]:
        return {"prompt": prompt, "candidates": [{**sample_json(c, self.server_paths), "prompt": ""} for c in candidates]}  # fmt: skip


class RewardClient(_Base):
    """A served reward, called synchronously.

    Args:
        url: The server, e.g. ``http://127.0.0.1:8000``.
        api_key: The server's ``--api-key``, sent as a bearer token.
        timeout: Seconds to wait for an answer.
        batch_size: Samples per request (the server's ``--max-samples`` caps it).
        server_paths: Send media paths as paths (the server reads them under its media root).
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.http = self.httpx.Client(timeout=self.timeout, headers=self.headers)

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        """One ``RewardOutput`` per sample, in order (the ``mmreward.protocols.Reward`` contract)."""
        out: list[RewardOutput] = []
        for body in self._chunks(samples):
            out += outputs_from(raise_for(self.http.post(f"{self.url}/score", json=body)))
        return out

    def rank(self, prompt: str, candidates: Sequence[Sample]) -> list[int]:
        """Indices of ``candidates`` (samples without a prompt of their own), best first."""
        body = self._rank_body(prompt, candidates)
        return raise_for(self.http.post(f"{self.url}/rank", json=body))["ranking"]

    def health(self) -> bool:
        """Whether the server is up and its model loaded."""
        return self.http.get(f"{self.url}/health").status_code == 200

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncRewardClient(_Base):
    """A served reward, called from asyncio; the same arguments as ``RewardClient``.

    ``await client.score_samples_async(samples)`` sends its chunks concurrently; ``score_samples``
    (the sync ``Reward`` contract) is there for consumers that are not async.
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.http = self.httpx.AsyncClient(timeout=self.timeout, headers=self.headers)

    async def score_samples_async(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        import asyncio

        responses = await asyncio.gather(
            *(self.http.post(f"{self.url}/score", json=body) for body in self._chunks(samples))
        )
        return [o for r in responses for o in outputs_from(raise_for(r))]

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        """The sync contract, through a client of its own (an event loop may not be running here)."""
        with RewardClient(
            self.url, timeout=self.timeout, batch_size=self.batch_size, server_paths=self.server_paths
        ) as client:
            client.headers.update(self.headers)
            client.http.headers.update(self.headers)
            return client.score_samples(samples)

    async def rank(self, prompt: str, candidates: Sequence[Sample]) -> list[int]:
        body = self._rank_body(prompt, candidates)
        return raise_for(await self.http.post(f"{self.url}/rank", json=body))["ranking"]

    async def health(self) -> bool:
        return (await self.http.get(f"{self.url}/health")).status_code == 200

    async def aclose(self) -> None:
        await self.http.aclose()
