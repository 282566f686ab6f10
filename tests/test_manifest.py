"""The manifest models: each VOD API limit, the discriminated union, and the reusable MediaMetadata."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vodsync.desired.manifest import (
    ITEM_ADAPTER,
    AttachedItem,
    ImageItem,
    ManifestDefaults,
    MediaMetadata,
    RegisterItem,
    UrlItem,
    VideoItem,
)


def video(**fields):
    return {"name": "intro", "type": "video", "file": "media/intro.mp4", **fields}


def errors_of(data) -> list[dict]:
    with pytest.raises(ValidationError) as caught:
        ITEM_ADAPTER.validate_python(data)
    return caught.value.errors(include_url=False)


def test_each_type_selects_its_model():
    assert isinstance(ITEM_ADAPTER.validate_python(video()), VideoItem)
    image = ITEM_ADAPTER.validate_python({"name": "l", "type": "image", "file": "l.png"})
    assert isinstance(image, ImageItem) and image.image_type == "default"
    attached = {"name": "s", "type": "attached", "file": "s.vtt", "business_type": "subtitle"}
    assert isinstance(ITEM_ADAPTER.validate_python(attached), AttachedItem)
    assert isinstance(
        ITEM_ADAPTER.validate_python({"name": "u", "type": "url", "url": "https://x/a.mp4"}), UrlItem
    )
    reg = {"name": "r", "type": "register", "file_url": "https://b.oss-cn-shanghai.aliyuncs.com/a.mp4"}
    assert isinstance(ITEM_ADAPTER.validate_python(reg), RegisterItem)


@pytest.mark.parametrize(
    "fields",
    [
        {"title": "x" * 129},
        {"title": ""},
        {"title": "Launch 🚀"},
        {"title": "Sunny ☀"},
        {"description": "d" * 1025},
        {"tags": [f"t{i}" for i in range(17)]},
        {"tags": ["x" * 33]},
        {"tags": ["a,b"]},
        {"tags": [""]},
        {"tags": "demo"},
        {"tags": [1]},
        {"cate_id": 0},
        {"cate_id": -5},
        {"cate_id": "7"},
        {"cate_id": True},
        {"cate_id": 1.5},
        {"cate_id": 2**64},
        {"cover_url": "ftp://example.com/c.jpg"},
        {"cover_url": "not a url"},
        {"template_group_id": "has space"},
        {"protect": "yes"},
        {"tittle": "typo"},
        {"name": "Intro"},
        {"name": "-intro"},
        {"name": "a b"},
        {"name": "x" * 129},
        {"file": "media/intro.txt"},
        {"file": "media/noext"},
        {"file": "a\x00.mp4"},
    ],
)
def test_video_limits_refuse(fields):
    assert errors_of(video(**fields))


@pytest.mark.parametrize(
    "fields",
    [
        {"title": "x" * 128},
        {"title": "中文标题 — ok"},
        {"description": "d" * 1024},
        {"tags": [f"t{i}" for i in range(16)]},
        {"tags": ["x" * 32]},
        {"cate_id": 2**63 - 1},
        {"name": "a/b.c_d-e/" + "x" * 100},
        {"file": "media/INTRO.MOV"},
        {"file": "/abs/path/a.m3u8"},
        {"file": "song.mp3"},
    ],
)
def test_video_limits_accept(fields):
    ITEM_ADAPTER.validate_python(video(**fields))


def test_unknown_type_and_missing_type():
    assert errors_of({"name": "a", "type": "vidoe"})[0]["type"] == "union_tag_invalid"
    assert errors_of({"name": "a"})[0]["type"] == "union_tag_not_found"


def test_image_rules():
    ok = {"name": "l", "type": "image", "file": "l.JPEG", "image_type": "cover"}
    assert ITEM_ADAPTER.validate_python(ok).image_type == "cover"
    assert errors_of({**ok, "image_type": "banner"})
    assert errors_of({**ok, "file": "l.webp"})
    # CreateUploadImage has no CoverURL / TemplateGroupId / WorkflowId.
    for field, value in (("cover_url", "https://x/c.jpg"), ("template_group_id", "g"), ("workflow_id", "w")):
        (err,) = errors_of({**ok, field: value})
        assert err["ctx"]["error"].field == field


@pytest.mark.parametrize(
    ("business_type", "good", "bad"),
    [
        ("watermark", ["w.png", "w.gif", "w.apng", "w.mov"], ["w.jpg", "w.vtt"]),
        ("subtitle", ["s.srt", "s.ass", "s.stl", "s.ttml", "s.vtt"], ["s.txt", "s.png"]),
        ("material", ["m.jpg", "m.gif", "m.png", "m.mp4", "m.mat", "m.zip"], ["m.mov", "m.srt"]),
    ],
)
def test_attached_extensions_per_business_type(business_type, good, bad):
    for name in good:
        ITEM_ADAPTER.validate_python(
            {"name": "a", "type": "attached", "file": name, "business_type": business_type}
        )
    for name in bad:
        (err,) = errors_of({"name": "a", "type": "attached", "file": name, "business_type": business_type})
        assert err["ctx"]["error"].field == "file"
    assert errors_of({"name": "a", "type": "attached", "file": "a.vtt", "business_type": "caption"})
    assert errors_of({"name": "a", "type": "attached", "file": "a.vtt"})  # business_type is required


def test_url_needs_an_extension_or_file_extension():
    base = {"name": "u", "type": "url"}
    ITEM_ADAPTER.validate_python({**base, "url": "https://cdn.example.com/a/trailer.mp4?sig=1"})
    ITEM_ADAPTER.validate_python({**base, "url": "https://cdn.example.com/get?id=3", "file_extension": "mp4"})
    assert errors_of({**base, "url": "https://cdn.example.com/get?id=3"})
    assert errors_of({**base, "url": "https://cdn.example.com/page.php"})
    assert errors_of({**base, "url": "ftp://cdn.example.com/a.mp4"})
    assert errors_of({**base, "url": "https://x/get", "file_extension": "exe"})
    assert errors_of({**base, "url": "https://x/get", "file_extension": ".mp4"})


def test_register_file_url():
    base = {"name": "r", "type": "register"}
    ITEM_ADAPTER.validate_python({**base, "file_url": "https://b.oss-cn-shanghai.aliyuncs.com/x/ep1.mkv"})
    assert errors_of({**base, "file_url": "https://b.oss-cn-shanghai.aliyuncs.com/x/ep1.txt"})
    assert errors_of({**base, "file_url": "oss://b/x/ep1.mp4"})
    long = "https://b.oss-cn-shanghai.aliyuncs.com/" + "a" * 1000 + ".mp4"
    assert errors_of({**base, "file_url": long})
    # The limit is bytes, not characters.
    wide = "https://b.oss-cn-shanghai.aliyuncs.com/" + "é" * 500 + ".mp4"
    assert len(wide) < 1024 < len(wide.encode())
    assert errors_of({**base, "file_url": wide})


def test_media_metadata_is_the_reusable_core():
    meta = MediaMetadata.model_validate({"title": "T", "tags": ["a"], "cate_id": 3})
    assert meta.title == "T" and meta.tags == ["a"]
    for bad in ({"title": "🎬"}, {"tags": ["a,b"]}, {"cate_id": 0}, {"name": "x"}):
        with pytest.raises(ValidationError):
            MediaMetadata.model_validate(bad)
    # Every item model is built from it: one definition of each limit.
    for model in (VideoItem, ImageItem, AttachedItem, UrlItem, RegisterItem, ManifestDefaults):
        assert issubclass(model, MediaMetadata)
