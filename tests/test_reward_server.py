"""The reward server (``mmreward serve``) on a tiny CLIP reward model, started in process on a free port."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("litserve")
httpx = pytest.importorskip("httpx")

from core_helpers import colour_image, tiny_reward_model  # noqa: E402

from integrations.serving.client import AsyncRewardClient, RewardClient, data_url  # noqa: E402
from mmreward.data.validation import media_policy, set_media_policy  # noqa: E402
from mmreward.types import RewardOutput, Sample  # noqa: E402

KEY = "test-key-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}


class CountingReward:
    """The saved tiny model for images, response length for text; logs each call's batch size to a file."""

    def __init__(self, model: str, log: str) -> None:
        import mmreward as mr

        self.scorer, self.log = mr.load(model, device="cpu"), Path(log)

    def score_samples(self, samples):
        with self.log.open("a") as f:
            f.write(f"{len(samples)}\n")
        if all(s.video is not None for s in samples):  # the video's size: it reached a readable file
            return [RewardOutput(score=float(Path(s.video).stat().st_size)) for s in samples]
        if all(s.image is None for s in samples):  # "fail" is a sample the reward cannot score
            return [
                RewardOutput(score=float("nan"), provenance={"failure": "no verdict"})
                if s.response == "fail"
                else RewardOutput(score=float(len(s.response or "")))
                for s in samples
            ]
        return self.scorer.score_samples(samples)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(api, headers=AUTH):
    """``api`` served in process on a free port until the block ends; yields its URL once healthy."""
    from integrations.serving.reward_server import create_server

    server = create_server(api, max_body_bytes=1_000_000, timeout=60, accelerator="cpu")
    server._monitor_workers = False  # its thread would outlive the manager that the teardown shuts down
    port = free_port()
    thread = threading.Thread(
        target=server.run,
        kwargs={"host": "127.0.0.1", "port": port, "api_server_worker_type": "thread",
                "generate_client_file": False, "log_level": "warning", "num_api_servers": 1},
        daemon=True,
    )  # fmt: skip
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", headers=headers).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start within 60 s"
        time.sleep(0.2)
    try:
        yield url
    finally:
        server._shutdown_event.set()
        thread.join(timeout=20)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server on the tiny model (token, media root, batches of up to 16), and the in-process scorer."""
    import mmreward as mr
    from integrations.serving.reward_server import RewardAPI, RewardSource
    from mmreward.scoring import Scorer

    root = tmp_path_factory.mktemp("serve")
    Scorer(tiny_reward_model(), device="cpu").save_pretrained(root / "model")
    media = root / "media"
    media.mkdir()
    images = [colour_image(c, i) for i, c in enumerate(["red", "green", "blue", "yellow"] * 2)]
    for i, image in enumerate(images):
        image.save(media / f"{i}.png")
    (root / "secret.png").write_bytes((media / "0.png").read_bytes())
    (media / "link.png").symlink_to(root / "secret.png")
    before = media_policy()
    set_media_policy(media_root=str(media))
    log = root / "batches.txt"
    source = RewardSource(
        reward=f"{__name__}.CountingReward",
        reward_args=json.dumps({"model": str(root / "model"), "log": str(log)}),
    )
    api = RewardAPI(source, api_key=KEY, media_root=str(media), max_batch_size=16, batch_timeout=0.05)
    with running(api) as url:
        scorer = mr.load(root / "model", device="cpu")
        yield {"url": url, "scorer": scorer, "images": images, "media": media, "log": log, "root": root}
    set_media_policy(**vars(before))


_http = httpx.Client(timeout=60)  # one pool for the module: a client per request costs an SSL context


def post(url, path, body, headers=AUTH, **kwargs):
    return _http.post(f"{url}{path}", json=body, headers=headers, **kwargs)


def test_concurrent_requests_are_batched_and_equal_in_process_scores(served):
    url, images = served["url"], served["images"]
    prompts = ["a red picture", "a blue picture", "two green circles"]
    jobs = [(prompts[i % 3], i % len(images)) for i in range(200)]
    urls = [data_url(image) for image in images]
    expected = served["scorer"].score(prompts=[p for p, _ in jobs], images=[images[k] for _, k in jobs])
    served["log"].write_text("")

    def one(i):
        if i == 100:  # a malformed body and a refused path in the middle of the stream
            bad = _http.post(f"{url}/score", content=b"{not json", headers=AUTH)
            assert bad.status_code == 422
        if i == 150:
            assert (
                post(url, "/score", {"samples": [{"prompt": "x", "image": "../secret.png"}]}).status_code
                == 422
            )
        prompt, k = jobs[i]
        response = post(url, "/score", {"samples": [{"prompt": prompt, "image": urls[k]}]})
        assert response.status_code == 200, response.text
        return response.json()["scores"][0]

    with ThreadPoolExecutor(16) as pool:
        scores = list(pool.map(one, range(200)))
    assert scores == pytest.approx(expected, abs=1e-5)
    sizes = [int(n) for n in served["log"].read_text().split()]
    assert sum(sizes) == 200 and max(sizes) > 1  # the reward saw requests batched together


def test_a_token_is_required_when_set(served):
    url, sample = served["url"], {"samples": [{"prompt": "a red picture", "image": "0.png"}]}
    assert post(url, "/score", sample, headers={}).status_code == 401
    assert post(url, "/score", sample, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert (
        post(url, "/rank", {"prompt": "p", "candidates": [{"response": "a"}]}, headers={}).status_code == 401
    )
    assert httpx.get(f"{url}/health").status_code == 401
    assert post(url, "/score", sample).status_code == 200


@pytest.mark.parametrize("path", ["../secret.png", "link.png", "/etc/passwd", "missing.png", "."])
def test_paths_outside_the_media_root_or_not_files_are_refused(served, path):
    response = post(served["url"], "/score", {"samples": [{"prompt": "p", "image": path}]})
    assert response.status_code == 422, response.text
    assert "image" in response.text


def test_a_path_under_the_media_root_scores_as_in_process(served):
    body = {"samples": [{"prompt": "a red picture", "image": "0.png"}, {"prompt": "a red picture", "image": str(served["media"] / "1.png")}]}  # fmt: skip
    got = post(served["url"], "/score", body).json()["scores"]
    want = served["scorer"].score(prompts="a red picture", images=[served["images"][0], served["images"][1]])
    assert got == pytest.approx(want, abs=1e-5)


def test_bad_requests_get_4xx_with_the_reason_and_the_server_serves_on(served):
    url = served["url"]
    cases = {
        "samples": {"samples": [{"prompt": "p", "imag": "0.png"}]},  # a typo'd field
        "either": {"prompt": "p"},
        "base64": {"samples": [{"prompt": "p", "image": "data:image/png;base64,!!!"}]},
        "read the image": {"samples": [{"prompt": "p", "image": "data:image/png;base64,aGVsbG8="}]},
        "1 to 256": {"samples": [{"prompt": "p", "response": "r"}] * 257},
    }
    for reason, body in cases.items():
        response = post(url, "/score", body)
        assert response.status_code == 422 and reason in response.text, (reason, response.text)
    big = post(url, "/score", {"samples": [{"prompt": "x" * 1_100_000}]})
    assert big.status_code == 413
    # the CLIP model cannot score a text-only sample mixed with images: 422 naming it, others unharmed
    mixed = {"samples": [{"prompt": "p", "response": "r"}, {"prompt": "p", "image": "0.png"}]}
    assert post(url, "/score", mixed).status_code == 422
    assert (
        post(url, "/score", {"samples": [{"prompt": "a red picture", "image": "0.png"}]}).status_code == 200
    )


def test_videos_travel_inline_or_as_paths_under_the_media_root(served):
    clip = bytes(range(256)) * 40  # the reward reads only the file's size
    (served["media"] / "clip.mp4").write_bytes(clip)
    inline = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    body = {"samples": [{"prompt": "p", "video": inline}, {"prompt": "p", "video": "clip.mp4"}]}
    assert post(served["url"], "/score", body).json()["scores"] == [len(clip), len(clip)]
    refused = post(
        served["url"], "/score", {"samples": [{"prompt": "p", "video": "data:image/png;base64,AAAA"}]}
    )
    assert refused.status_code == 422 and "video data URL" in refused.text


def test_openrlhf_remote_reward_body(served):
    body = {"query": ["Q: hi A: hello", "Q: hi A: hey there"], "prompts": ["Q: hi", "Q: hi"], "labels": ["", ""], "metas": None}  # fmt: skip
    response = post(served["url"], "/score", body)
    assert response.status_code == 200, response.text
    assert response.json()["rewards"] == [len(" A: hello"), len(" A: hey there")]


def test_an_unscored_sample_is_null_with_its_reason_and_nan_in_the_client(served):
    body = post(served["url"], "/score", {"samples": [{"prompt": "p", "response": "fail"}, {"prompt": "p", "response": "ok"}]}).json()  # fmt: skip
    assert body["scores"] == [None, 2.0] and body["outputs"][0]["failure"] == "no verdict"
    with RewardClient(served["url"], api_key=KEY) as client:
        failed, ok = client.score_samples([Sample("p", response="fail"), Sample("p", response="ok")])
    assert math.isnan(failed.score) and failed.provenance["failure"] == "no verdict" and ok.score == 2.0


def test_rank_and_the_clients_match_the_scorer(served):
    url, images, scorer = served["url"], served["images"], served["scorer"]
    candidates = [{"image": data_url(image)} for image in images]
    ranking = post(url, "/rank", {"prompt": "a red picture", "candidates": candidates}).json()["ranking"]
    assert ranking == scorer.rank("a red picture", images=images)
    samples = [Sample("a red picture", image=image) for image in images]
    want = scorer.score(samples=samples)
    with RewardClient(url, api_key=KEY, batch_size=3) as client:
        assert [o.score for o in client.score_samples(samples)] == pytest.approx(want, abs=1e-5)
        assert client.rank("a red picture", [Sample(image=image) for image in images]) == ranking
    with RewardClient(url, api_key=KEY, server_paths=True) as client:  # paths read by the server
        assert client.score_samples([Sample("a red picture", image="0.png")])[0].score == pytest.approx(
            want[0], abs=1e-5
        )
        with pytest.raises(ValueError, match="422.*outside the media root"):
            client.score_samples([Sample("p", image=str(served["root"] / "secret.png"))])
    with pytest.raises(PermissionError, match="401"):
        RewardClient(url).score_samples(samples)

    async def run():
        client = AsyncRewardClient(url, api_key=KEY, batch_size=3)
        try:
            return await client.score_samples_async(samples)
        finally:
            await client.aclose()

    assert [o.score for o in asyncio.run(run())] == pytest.approx(want, abs=1e-5)


def test_best_of_n_takes_a_served_model(served):
    from integrations.search import best_of_n

    images = served["images"]
    with RewardClient(served["url"], api_key=KEY) as client:
        groups = [[Sample("a red picture", image=image) for image in images]]
        picks = best_of_n(client, groups)
    scores = served["scorer"].score(prompts="a red picture", images=images)
    assert picks[0].index == max(range(len(scores)), key=scores.__getitem__)


def test_serve_command_help_and_bad_model(capsys):
    from mmreward.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0 and "--media-root" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="--model"):
        main(["serve", "--model", "no/such/dir"])


def test_a_bf16_server_scores_as_an_in_process_bf16_scorer(served):
    import torch

    import mmreward as mr
    from integrations.serving.reward_server import RewardAPI, RewardSource

    model, images = served["root"] / "model", served["images"]
    prompts = ["a red picture", "two green circles"] * 4
    samples = [{"prompt": p, "image": data_url(image)} for p, image in zip(prompts, images)]
    api = RewardAPI(RewardSource(model=str(model), device="cpu", dtype="bf16"), max_batch_size=8)
    with running(api, headers={}) as url, ThreadPoolExecutor(8) as pool:
        whole = post(url, "/score", {"samples": samples}, headers={})  # the in-process scorer's batch
        alone = list(pool.map(lambda s: post(url, "/score", {"samples": [s]}, headers={}), samples))
    assert whole.status_code == 200 and all(r.status_code == 200 for r in alone), whole.text
    bf16 = mr.load(model, device="cpu", dtype=torch.bfloat16).score(prompts=prompts, images=images)
    fp32 = served["scorer"].score(prompts=prompts, images=images)
    # the same batch in the same dtype computes the same scores; fp32 ones differ (the dtype got there)
    assert whole.json()["scores"] == pytest.approx(bf16, abs=1e-5)
    assert whole.json()["scores"] != pytest.approx(fp32, abs=1e-5)
    # requests batched by the server: other batch shapes, bf16 rounding (~3 significant digits)
    scale = 1 + max(map(abs, fp32))
    assert [r.json()["scores"][0] for r in alone] == pytest.approx(bf16, abs=5e-3 * scale)


def test_dtype_applies_to_a_saved_model_only(capsys):
    from integrations.serving.reward_server import RewardSource
    from mmreward.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--reward", f"{__name__}.CountingReward", "--dtype", "bf16"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--dtype applies to a saved model (--model)" in err
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--reward", f"{__name__}.CountingReward", "--device", "cpu"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--device applies to a saved model (--model)" in err
    with pytest.raises(ValueError, match="not to the reward class"):
        RewardSource(reward=f"{__name__}.CountingReward", dtype="bf16")
    with pytest.raises(ValueError, match="Unknown dtype 'fp16'"):
        RewardSource(model="m", dtype="fp16")
