"""What users bring as shipped: gzipped and tabular data files, a wrong --format, LiDAR and RGB-D clouds.

Each fixture is a real file (or a cut of one) from a public repository; tests/fixtures/SOURCES.md
names it. Scans whose licence is non-commercial (KITTI, nuScenes) or unstated (SUN RGB-D) are not
copied: their tests write the same binary layout, documented by each dataset, in tmp_path.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from mmreward.data.files import RecordError, iter_raw
from mmreward.data.formats_video import convert_file
from mmreward.data.records import read_records
from mmreward.types import Preference

FIXTURES = Path(__file__).parent / "fixtures"
HH_RLHF = FIXTURES / "formats" / "hh-rlhf_harmless-base_test_first5.jsonl"
ARENA = FIXTURES / "video" / "genai_bench_video_arena_head60.json"
IMAGENHUB = FIXTURES / "formats" / "Multi-Subject_IG_rater1.tsv"
VIDEO = FIXTURES / "video"


def _gzip(source: Path, target: Path) -> Path:
    with source.open("rb") as src, gzip.open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


# ---- data files -------------------------------------------------------------------------------


def test_gzipped_jsonl_reads_like_the_plain_file(tmp_path):
    """hh-rlhf ships test.jsonl.gz; it reads as its decompressed lines do."""
    packed = _gzip(HH_RLHF, tmp_path / "test.jsonl.gz")
    plain = read_records(HH_RLHF, "hh-rlhf")
    records = read_records(packed, "hh-rlhf")
    assert len(records) == 5 and all(isinstance(r, Preference) for r in records)
    assert [r.chosen.response for r in records] == [r.chosen.response for r in plain]
    assert records[0].chosen.meta["line"] == 1


def test_gzip_under_a_plain_name_says_so(tmp_path):
    packed = _gzip(HH_RLHF, tmp_path / "test.jsonl")
    with pytest.raises(RecordError, match=r"test\.jsonl:1: the file is gzip-compressed; name it with a \.gz"):
        read_records(packed, "hh-rlhf")


def test_truncated_gzip_names_the_file(tmp_path):
    packed = _gzip(HH_RLHF, tmp_path / "cut.jsonl.gz")
    (tmp_path / "short.jsonl.gz").write_bytes(packed.read_bytes()[:200])
    with pytest.raises(
        RecordError, match=r"short\.jsonl\.gz: the file is named as gzip-compressed but cannot"
    ):
        read_records(tmp_path / "short.jsonl.gz", "hh-rlhf")


def test_gzipped_json_and_csv(tmp_path):
    arena = convert_file(_gzip(ARENA, tmp_path / "data.json.gz"), "genai-bench-video-arena")
    assert len(arena) == 60 and arena[0] == convert_file(ARENA, "genai-bench-video-arena")[0]
    csv_file = FIXTURES / "video" / "videoalign_example.csv"
    rows = [row for _, row in iter_raw(_gzip(csv_file, tmp_path / "example.csv.gz"))]
    assert rows == [row for _, row in iter_raw(csv_file)] and len(rows) == 12


def test_tsv_is_split_on_tabs():
    """ImagenHub's rater files are TSV with one column per model; cells such as [0.5,1] stay strings."""
    rows = [row for _, row in iter_raw(IMAGENHUB)]
    assert len(rows) > 10
    assert list(rows[0]) == ["id", "uid", "CustomDiffusion", "DreamBooth", "TextualInversion"]
    assert rows[0]["uid"] == "sample_0.jpg" and rows[0]["CustomDiffusion"] == "[0.5,1]"


def test_tsv_without_prompts_is_refused_by_field():
    """ImagenHub's rater files hold no prompt: the refusal names the file, row and field."""
    with pytest.raises(RecordError, match=r"Multi-Subject_IG_rater1\.tsv:1 \(id 0\) field 'prompt'"):
        read_records(IMAGENHUB)


def test_ragged_tsv_row_names_the_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("prompt\tscore\na cat\t3\na dog\t4\textra\n")
    with pytest.raises(RecordError, match=r"bad\.tsv:3: the row has 3 cells but the header names 2"):
        list(iter_raw(bad))


def test_parquet_reads_like_jsonl(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    plain = read_records(HH_RLHF, "hh-rlhf")
    rows = [row for _, row in iter_raw(HH_RLHF)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet")
    records = read_records(tmp_path / "test.parquet", "hh-rlhf")
    assert [r.rejected.response for r in records] == [r.rejected.response for r in plain]


def test_wrong_format_names_line_missing_field_and_the_format_that_fits(tmp_path):
    """GenAI-Bench's video arena file read as genai-bench-video: the error says which format fits."""
    with pytest.raises(RecordError) as err:
        read_records(ARENA, "genai-bench-video", check_media=False)
    message = str(err.value)
    assert "genai_bench_video_arena_head60.json:1" in message
    assert "needs field(s) 'models'" in message and "'video_left'" in message
    assert "looks like 'genai-bench-video-arena'" in message
    with pytest.raises(ValueError, match=r"head60\.json:1: .*looks like 'genai-bench-video-arena'"):
        convert_file(ARENA, "genai-bench-video")


def test_wrong_format_without_a_match_says_so():
    with pytest.raises(RecordError, match="No known format has these fields; map them with a field_map"):
        read_records(IMAGENHUB, "pick-a-pic")


# ---- video probing ----------------------------------------------------------------------------


def test_video_info_decodes_before_calling_a_damaged_file_good():
    """decord's corrupted.mp4 opens and reports 50 frames; frame 28 on does not decode."""
    from modalities.video import video_info

    with pytest.raises(ValueError) as err:
        video_info(VIDEO / "corrupted.mp4")
    message = str(err.value)
    assert "corrupted.mp4' is damaged or truncated: it opens, but frame 28 does not decode" in message
    assert message.index("Re-encode") < message.index("Decoder: ")  # our words first, decord's detail after
    assert "/github/workspace" not in message  # decord's source paths are dropped


def test_constant_clip_gets_a_warning_naming_it():
    """decord's unordered.mov decodes to four all-white frames."""
    from modalities.video import FrameSampler, decode_frames, video_info

    with pytest.warns(UserWarning, match=r"unordered\.mov' is the same image \(mean value 255/255\)"):
        info = video_info(VIDEO / "unordered.mov")
    assert info.num_frames == 4
    with pytest.warns(UserWarning, match="same image"):
        decode_frames(VIDEO / "unordered.mov", FrameSampler(num_frames=4))


def test_moving_clip_gives_no_warning(recwarn):
    from modalities.video import video_info

    assert video_info(VIDEO / "video1.mp4").num_frames == 24
    assert not [w for w in recwarn if "same image" in str(w.message)]


def test_a_table_given_as_a_video_is_told_it_is_not_one():
    from modalities.video import FrameSampler, read_frames, video_info

    for call in (lambda p: video_info(p), lambda p: read_frames(p, FrameSampler(num_frames=2))):
        with pytest.raises(ValueError) as err:
            call(VIDEO / "videoalign_example.csv")
        message = str(err.value)
        assert "videoalign_example.csv' is not a video (a .csv file" in message
        assert "Re-encode" not in message and "Pass a video file" in message


def test_empty_video_file_is_named_empty(tmp_path):
    from modalities.video import video_info

    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.mp4' is empty \(0 bytes\)"):
        video_info(tmp_path / "empty.mp4")
