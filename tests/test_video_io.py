"""modalities.video: decoding real clips, frame sampling, rotation, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmreward.data.synthetic.video import write_mp4
from mmreward.types import Sample
from modalities.video import FrameSampler, decode_frames, load_video, read_frames, video_info

FIXTURES = Path(__file__).parent / "fixtures" / "video"


def test_uniform_sampling_picks_segment_centres_and_repeats_short_clips():
    assert FrameSampler(num_frames=4).indices(8, 8.0) == [1, 3, 5, 7]
    assert FrameSampler(num_frames=4).indices(2, 8.0) == [0, 0, 1, 1]


def test_fps_and_window_sampling_follow_time():
    # a 30 fps clip sampled at 10 fps from 1 s: every third frame from frame 30
    assert FrameSampler("fps", num_frames=4, fps=10.0, start=1.0).indices(300, 30.0) == [30, 33, 36, 39]
    # window 2-4 s of a 10 fps clip, 4 frames: centres of four 0.5 s segments
    assert FrameSampler("window", num_frames=4, start=2.0, end=4.0).indices(100, 10.0) == [22, 27, 32, 37]


def test_sampler_rejects_bad_settings():
    with pytest.raises(ValueError, match="positive fps"):
        FrameSampler("fps", fps=None)
    with pytest.raises(ValueError, match="window is empty"):
        FrameSampler("window", start=3.0, end=1.0)


def test_real_generated_clip_decodes_with_its_metadata():
    info = video_info(FIXTURES / "video1.mp4")
    assert (info.num_frames, info.fps, info.height, info.width) == (24, 8.0, 640, 768)
    frames = read_frames(FIXTURES / "video1.mp4", FrameSampler(num_frames=6), size=64)
    assert frames.shape == (6, 3, 64, 64) and frames.min() >= 0.0 and frames.max() <= 1.0
    # the clip moves: consecutive sampled frames differ, and the batch is not a repeated frame
    assert (frames[1:] - frames[:-1]).abs().mean() > 0.01


def test_batched_decord_matches_sequential_pyav():
    sampler = FrameSampler(num_frames=5)
    fast = decode_frames(FIXTURES / "video1.mp4", sampler)
    slow = decode_frames(FIXTURES / "video1.mp4", sampler, backend="pyav")
    assert fast.shape == slow.shape
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 2.0  # same frames, colour conversion aside


def test_rotation_side_data_is_applied_like_a_player():
    upright = decode_frames(FIXTURES / "video_0.mov", FrameSampler(num_frames=1))
    turned = decode_frames(FIXTURES / "video_90.mov", FrameSampler(num_frames=1))
    assert upright.shape[1:3] == (320, 568)
    assert turned.shape[1:3] == (568, 320)  # the 90 degree clip comes back portrait
    by_pyav = decode_frames(FIXTURES / "video_90.mov", FrameSampler(num_frames=1), backend="pyav")
    assert np.abs(turned.astype(int) - by_pyav.astype(int)).mean() < 2.0  # both backends turn it the same way


def test_out_of_order_timestamps_still_give_every_frame():
    frames = decode_frames(FIXTURES / "unordered.mov", FrameSampler(num_frames=4))
    assert frames.shape == (4, 50, 50, 3)


def test_gif_is_read_with_pyav(tmp_path):
    images = [Image.new("RGB", (20, 20), (40 * i, 0, 0)) for i in range(5)]
    images[0].save(tmp_path / "ramp.gif", save_all=True, append_images=images[1:], duration=100)
    frames = read_frames(tmp_path / "ramp.gif", FrameSampler(num_frames=5))
    reds = frames[:, 0].mean(dim=(1, 2))
    assert torch.all(reds[1:] > reds[:-1])  # frames in order


def test_written_mp4_round_trips(tmp_path):
    clip = np.zeros((6, 32, 32, 3), dtype=np.uint8)
    for t in range(6):
        clip[t, :, 4 * t : 4 * t + 8] = (200, 30, 30)  # a red bar moving right
    write_mp4(clip, tmp_path / "bar.mp4", fps=6)
    info = video_info(tmp_path / "bar.mp4")
    assert (info.num_frames, info.fps) == (6, 6.0)
    frames = decode_frames(tmp_path / "bar.mp4", FrameSampler(num_frames=6))
    centres = [np.argmax(f[:, :, 0].mean(0)) for f in frames]
    assert centres == sorted(centres) and centres[-1] > centres[0] + 10


def test_in_memory_frames_are_sampled_and_resized():
    clip = torch.rand(10, 3, 48, 64)
    out = load_video(clip, FrameSampler(num_frames=5), size=32)
    assert out.shape == (5, 3, 32, 32)
    with pytest.raises(ValueError, match="no frame rate"):
        load_video(clip, FrameSampler("fps", fps=2.0))


def test_missing_video_names_file_and_record(tmp_path):
    sample = Sample(prompt="p", video=str(tmp_path / "nope.mp4"), meta={"source": "data.jsonl", "line": 7})
    with pytest.raises(FileNotFoundError, match=r"data\.jsonl:7 field 'video'.*nope\.mp4"):
        load_video(sample.video, FrameSampler(), sample=sample)


def test_corrupt_video_names_file():
    with pytest.raises(ValueError, match=r"corrupted\.mp4.*Re-encode"):
        read_frames(FIXTURES / "corrupted.mp4", FrameSampler(num_frames=4))


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 10])
def test_empty_or_garbage_file_names_file(tmp_path, content):
    path = tmp_path / "empty.mp4"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"empty\.mp4"):
        read_frames(path, FrameSampler(num_frames=2))


def test_container_without_frames_names_file(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "noframes.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()  # writes the header of a video track that never gets a frame
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match=r"noframes\.mp4"):
        read_frames(path, FrameSampler(num_frames=2))
