"""The emulator's VOD model, driven through the real aliyunsdkvod request classes.

Every call goes through `AcsClient.do_action_with_exception` against a running
emulator over HTTP; uploads go through oss2 with the decoded UploadAddress and
UploadAuth. Time moves with `advance`, never with sleeps.
"""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING, Any

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.request import CommonRequest
from aliyunsdkvod.request.v20170321 import (
    CreateUploadAttachedMediaRequest,
    CreateUploadImageRequest,
    CreateUploadVideoRequest,
    DeleteAttachedMediaRequest,
    DeleteImageRequest,
    DeleteVideoRequest,
    GetAttachedMediaInfoRequest,
    GetImageInfoRequest,
    GetVideoInfoRequest,
    GetVideoInfosRequest,
    RefreshUploadVideoRequest,
    RegisterMediaRequest,
    SearchMediaRequest,
    UpdateAttachedMediaInfosRequest,
    UpdateImageInfosRequest,
    UpdateVideoInfoRequest,
    UpdateVideoInfosRequest,
)

if TYPE_CHECKING:
    from emulator_world import World

pytest_plugins = ["emulator_world"]  # the world / slow_world fixtures

HEX32 = re.compile(r"[0-9a-f]{32}")


def decode(value: str) -> dict[str, Any]:
    """UploadAddress / UploadAuth: base64 of UTF-8 JSON."""
    return json.loads(base64.b64decode(value))


def create_video(world: World, title: str = "clip", file_name: str = "clip.mp4", **params) -> dict:
    return world.vod(CreateUploadVideoRequest.CreateUploadVideoRequest, Title=title, FileName=file_name, **params)


def video_info(world: World, **params) -> dict:
    return world.vod(GetVideoInfoRequest.GetVideoInfoRequest, **params)["Video"]


def expect_error(world: World, code: str, status: int, request_cls, **params) -> ServerException:
    with pytest.raises(ServerException) as caught:
        world.vod(request_cls, **params)
    assert (caught.value.get_error_code(), caught.value.get_http_status()) == (code, status), caught.value
    return caught.value


# ---------------------------------------------------------------- CreateUploadVideo


def test_create_upload_video_returns_a_ticket_for_a_new_key(world: World) -> None:
    created = create_video(world, "Intro", "intro.MP4", Tags="a,b", ReferenceId="intro-0001", CateId=7)
    assert HEX32.fullmatch(created["VideoId"])
    address, auth = decode(created["UploadAddress"]), decode(created["UploadAuth"])
    assert address["Endpoint"] == world.endpoint
    assert re.fullmatch(r"outin-[0-9a-f]{32}", address["Bucket"])
    assert re.fullmatch(r"sv/[0-9a-f]{8}-[0-9a-f]+/[0-9a-f]{8}-[0-9a-f]+\.mp4", address["FileName"])
    assert set(auth) >= {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration", "ExpireUTCTime", "Region"}
    assert auth["Expiration"].isdigit()

    video = video_info(world, VideoId=created["VideoId"])
    assert video["Status"] == "Uploading"
    assert (video["Title"], video["Tags"], video["ReferenceId"], video["CateId"]) == ("Intro", "a,b", "intro-0001", 7)
    assert video["Snapshots"] == {"Snapshot": []}
    assert video["StorageLocation"] == f"{address['Bucket']}.oss-cn-shanghai.aliyuncs.com"
    assert video_info(world, ReferenceId="intro-0001")["VideoId"] == created["VideoId"]


def test_each_create_is_a_new_video(world: World) -> None:
    first, second = create_video(world), create_video(world)
    assert first["VideoId"] != second["VideoId"]
    assert decode(first["UploadAddress"])["FileName"] != decode(second["UploadAddress"])["FileName"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"FileName": "a.mp4"}, "MissingParameter"),
        ({"Title": "t"}, "MissingParameter"),
        ({"Title": "x" * 129, "FileName": "a.mp4"}, "LengthExceededMax"),
        ({"Title": "party \U0001f389", "FileName": "a.mp4"}, "IllegalCharacters"),
        ({"Title": "t", "FileName": "noextension"}, "InvalidFileName.Extension"),
        ({"Title": "t", "FileName": "notes.txt"}, "InvalidFileName.Extension"),
        ({"Title": "t", "FileName": "a.mp4", "Description": "d" * 1025}, "LengthExceededMax"),
        ({"Title": "t", "FileName": "a.mp4", "Tags": ",".join(f"t{i}" for i in range(17))}, "TagsExceededMax"),
        ({"Title": "t", "FileName": "a.mp4", "Tags": "ok," + "x" * 33}, "TagsExceededMax"),
        ({"Title": "t", "FileName": "a.mp4", "ReferenceId": "short"}, "InvalidParameter.ReferenceId"),
        ({"Title": "t", "FileName": "a.mp4", "UserData": "not json"}, "InvalidParameter.UserData"),
    ],
)
def test_create_upload_video_rejects_bad_parameters(world: World, params: dict, code: str) -> None:
    expect_error(world, code, 400, CreateUploadVideoRequest.CreateUploadVideoRequest, **params)


def test_sixteen_tags_and_128_chars_are_still_fine(world: World) -> None:
    tags = ",".join(f"tag{i}" for i in range(16))
    created = create_video(world, "x" * 128, Tags=tags)
    assert video_info(world, VideoId=created["VideoId"])["Tags"] == tags


def test_duplicate_reference_id_is_rejected_until_the_owner_is_deleted(world: World) -> None:
    first = create_video(world, ReferenceId="dup-ref-1")
    error = expect_error(
        world, "InvalidParameter.ReferenceId", 400, CreateUploadVideoRequest.CreateUploadVideoRequest,
        Title="t", FileName="a.mp4", ReferenceId="dup-ref-1",
    )
    assert "already exists" in error.get_error_msg()
    world.vod(DeleteVideoRequest.DeleteVideoRequest, ReferenceIds="dup-ref-1")
    second = create_video(world, ReferenceId="dup-ref-1")
    assert second["VideoId"] != first["VideoId"]


def test_template_group_ids(world: World) -> None:
    create_video(world, TemplateGroupId="VOD_NO_TRANSCODE")
    create_video(world, TemplateGroupId="0" * 32)
    expect_error(
        world, "InvalidTemplateGroupId.NotFound", 404, CreateUploadVideoRequest.CreateUploadVideoRequest,
        Title="t", FileName="a.mp4", TemplateGroupId="no-such-group",
    )


def test_unknown_action_is_not_found(world: World) -> None:
    request = CommonRequest(version="2017-03-21", action_name="NoSuchThing", product="vod")
    request.set_method("POST")
    with pytest.raises(ServerException) as caught:
        world.vod_common(request)
    assert caught.value.get_error_code() == "InvalidAction.NotFound"
    assert caught.value.get_http_status() == 404


# ---------------------------------------------------------------- upload + lifecycle


def test_oss2_upload_with_the_ticket_makes_the_video_normal(world: World) -> None:
    created = create_video(world, TemplateGroupId="VOD_NO_TRANSCODE")
    world.upload(created, b"x" * 1234)
    video = video_info(world, VideoId=created["VideoId"])
    assert (video["Status"], video["Size"]) == ("Normal", 1234)


def test_status_lifecycle_follows_the_clock(slow_world: World) -> None:
    created = create_video(slow_world)
    video_id = created["VideoId"]
    slow_world.advance(60)
    assert video_info(slow_world, VideoId=video_id)["Status"] == "Uploading"  # no server-side timeout
    slow_world.upload(created, b"0123456789")
    assert video_info(slow_world, VideoId=video_id)["Status"] == "UploadSucc"
    slow_world.advance(5)
    assert video_info(slow_world, VideoId=video_id)["Status"] == "Transcoding"
    slow_world.advance(5)
    video = video_info(slow_world, VideoId=video_id)
    assert (video["Status"], video["Size"]) == ("Normal", 10)


def test_no_transcode_template_is_normal_right_after_upload(slow_world: World) -> None:
    created = create_video(slow_world, TemplateGroupId="VOD_NO_TRANSCODE")
    slow_world.upload(created, b"abc")
    assert video_info(slow_world, VideoId=created["VideoId"])["Status"] == "Normal"


def test_refresh_keeps_the_key_mints_a_new_credential_and_can_replace_the_source(slow_world: World) -> None:
    created = create_video(slow_world, ReferenceId="refresh-me")
    refreshed = slow_world.vod(RefreshUploadVideoRequest.RefreshUploadVideoRequest, VideoId=created["VideoId"])
    assert refreshed["VideoId"] == created["VideoId"]
    assert decode(refreshed["UploadAddress"]) == decode(created["UploadAddress"])
    assert decode(refreshed["UploadAuth"])["AccessKeyId"] != decode(created["UploadAuth"])["AccessKeyId"]

    slow_world.upload(refreshed, b"first")
    slow_world.advance(10)
    assert video_info(slow_world, VideoId=created["VideoId"])["Status"] == "Normal"

    again = slow_world.vod(RefreshUploadVideoRequest.RefreshUploadVideoRequest, ReferenceId="refresh-me")
    assert again["VideoId"] == created["VideoId"]
    assert video_info(slow_world, VideoId=created["VideoId"])["Status"] == "Uploading"
    slow_world.upload(again, b"the second source")
    video = video_info(slow_world, VideoId=created["VideoId"])
    assert (video["Status"], video["Size"]) == ("UploadSucc", len(b"the second source"))
    slow_world.advance(10)
    assert video_info(slow_world, VideoId=created["VideoId"])["Status"] == "Normal"


def test_refresh_of_an_unknown_video(world: World) -> None:
    expect_error(world, "InvalidVideo.NotFound", 404, RefreshUploadVideoRequest.RefreshUploadVideoRequest,
                 VideoId="f" * 32)
    expect_error(world, "InvalidVideo.NotFound", 404, RefreshUploadVideoRequest.RefreshUploadVideoRequest,
                 ReferenceId="nobody-has-this")


# ---------------------------------------------------------------- read / update / delete


def test_get_video_info_of_a_missing_video(world: World) -> None:
    expect_error(world, "InvalidVideo.NotFound", 404, GetVideoInfoRequest.GetVideoInfoRequest, VideoId="0" * 32)
    expect_error(world, "MissingParameter", 400, GetVideoInfoRequest.GetVideoInfoRequest)


def test_get_video_infos_reports_missing_ids_and_caps_at_twenty(world: World) -> None:
    ids = [create_video(world, f"v{i}", ReferenceId=f"ref-many-{i}")["VideoId"] for i in range(19)]
    ghost = "e" * 32
    result = world.vod(GetVideoInfosRequest.GetVideoInfosRequest, VideoIds=",".join([*ids, ghost]))
    assert [v["VideoId"] for v in result["VideoList"]] == ids
    assert result["NonExistVideoIds"] == [ghost]
    assert all(isinstance(v["Snapshots"], list) for v in result["VideoList"])

    by_ref = world.vod(GetVideoInfosRequest.GetVideoInfosRequest, ReferenceIds="ref-many-3,ref-missing")
    assert [v["VideoId"] for v in by_ref["VideoList"]] == [ids[3]]
    assert by_ref["NonExistReferenceIds"] == ["ref-missing"]

    expect_error(world, "VideoIdsExceededMax", 400, GetVideoInfosRequest.GetVideoInfosRequest,
                 VideoIds=",".join([*ids, ghost, "d" * 32]))


def test_update_video_info_changes_only_what_is_passed(world: World) -> None:
    created = create_video(world, "Old", Tags="a", Description="desc", ReferenceId="upd-ref-1")
    world.vod(UpdateVideoInfoRequest.UpdateVideoInfoRequest, VideoId=created["VideoId"], Title="New")
    video = video_info(world, VideoId=created["VideoId"])
    assert (video["Title"], video["Tags"], video["Description"]) == ("New", "a", "desc")

    world.vod(UpdateVideoInfoRequest.UpdateVideoInfoRequest, VideoId=created["VideoId"], Tags="x,y",
              ReferenceId="upd-ref-2")
    video = video_info(world, VideoId=created["VideoId"])
    assert (video["Title"], video["Tags"], video["ReferenceId"]) == ("New", "x,y", "upd-ref-2")
    create_video(world, ReferenceId="upd-ref-1")  # the old ReferenceId is free again

    expect_error(world, "TagsExceededMax", 400, UpdateVideoInfoRequest.UpdateVideoInfoRequest,
                 VideoId=created["VideoId"], Tags=",".join(str(i) for i in range(17)))
    expect_error(world, "InvalidVideo.NotFound", 404, UpdateVideoInfoRequest.UpdateVideoInfoRequest,
                 VideoId="0" * 32, Title="x")
    assert video_info(world, VideoId=created["VideoId"])["Tags"] == "x,y"


def test_update_video_infos(world: World) -> None:
    a, b = create_video(world, "A")["VideoId"], create_video(world, "B", Tags="keep")["VideoId"]
    ghost = "c" * 32
    content = [{"VideoId": a, "Title": "A2"}, {"VideoId": b, "Description": "bee"}, {"VideoId": ghost, "Title": "z"}]
    result = world.vod(UpdateVideoInfosRequest.UpdateVideoInfosRequest, UpdateContent=json.dumps(content))
    assert result["NonExistVideoIds"] == [ghost]
    assert video_info(world, VideoId=a)["Title"] == "A2"
    video_b = video_info(world, VideoId=b)
    assert (video_b["Title"], video_b["Description"], video_b["Tags"]) == ("B", "bee", "keep")
    too_many = [{"VideoId": a, "Title": str(i)} for i in range(21)]
    expect_error(world, "VideoIdsExceededMax", 400, UpdateVideoInfosRequest.UpdateVideoInfosRequest,
                 UpdateContent=json.dumps(too_many))


def test_delete_video_removes_the_media_and_its_object(world: World) -> None:
    kept = create_video(world, "keep")
    gone = create_video(world, "gone", TemplateGroupId="VOD_NO_TRANSCODE")
    world.upload(gone, b"bytes")
    address = decode(gone["UploadAddress"])
    assert world.head(address["Bucket"], address["FileName"]) == 5

    ghost = "a" * 32
    result = world.vod(DeleteVideoRequest.DeleteVideoRequest, VideoIds=f"{gone['VideoId']},{ghost}")
    assert result["NonExistVideoIds"] == [ghost]
    assert result["ForbiddenVideoIds"] == []
    expect_error(world, "InvalidVideo.NotFound", 404, GetVideoInfoRequest.GetVideoInfoRequest,
                 VideoId=gone["VideoId"])
    assert world.head(address["Bucket"], address["FileName"]) is None
    assert video_info(world, VideoId=kept["VideoId"])["Title"] == "keep"
    expect_error(world, "VideoIdsExceededMax", 400, DeleteVideoRequest.DeleteVideoRequest,
                 VideoIds=",".join(f"{i:032x}" for i in range(21)))
    expect_error(world, "MissingParameter", 400, DeleteVideoRequest.DeleteVideoRequest)


# ---------------------------------------------------------------- images


def test_image_upload_update_and_delete(world: World) -> None:
    created = world.vod(CreateUploadImageRequest.CreateUploadImageRequest, ImageType="cover", ImageExt="jpg",
                        Title="poster", Tags="p")
    address = decode(created["UploadAddress"])
    assert re.fullmatch(r"image/cover/[0-9A-F]{32}-6-2\.jpg", address["FileName"])
    assert created["FileURL"].endswith(address["FileName"])
    info = world.vod(GetImageInfoRequest.GetImageInfoRequest, ImageId=created["ImageId"])["ImageInfo"]
    assert (info["Status"], info["ImageType"], info["Title"]) == ("Uploading", "cover", "poster")

    world.upload(created, b"\x89PNG fake")
    info = world.vod(GetImageInfoRequest.GetImageInfoRequest, ImageId=created["ImageId"])["ImageInfo"]
    assert info["Status"] == "Normal"
    assert info["Mezzanine"]["FileSize"] == 9

    ghost = "b" * 32
    result = world.vod(UpdateImageInfosRequest.UpdateImageInfosRequest, UpdateContent=json.dumps(
        [{"ImageId": created["ImageId"], "Title": "poster 2"}, {"ImageId": ghost, "Title": "x"}]))
    assert result["NonExistImageIds"] == [ghost]
    info = world.vod(GetImageInfoRequest.GetImageInfoRequest, ImageId=created["ImageId"])["ImageInfo"]
    assert (info["Title"], info["Tags"]) == ("poster 2", "p")

    world.vod(DeleteImageRequest.DeleteImageRequest, DeleteImageType="ImageId", ImageIds=created["ImageId"])
    expect_error(world, "NoSuchResource", 404, GetImageInfoRequest.GetImageInfoRequest, ImageId=created["ImageId"])
    assert world.head(address["Bucket"], address["FileName"]) is None


def test_delete_image_by_url(world: World) -> None:
    created = world.vod(CreateUploadImageRequest.CreateUploadImageRequest, ImageType="default")
    assert decode(created["UploadAddress"])["FileName"].endswith(".png")  # png is the default
    world.vod(DeleteImageRequest.DeleteImageRequest, DeleteImageType="ImageURL", ImageURLs=created["FileURL"])
    expect_error(world, "NoSuchResource", 404, GetImageInfoRequest.GetImageInfoRequest, ImageId=created["ImageId"])


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "MissingParameter"),
        ({"ImageType": "banner"}, "InvalidParameter.ImageType"),
        ({"ImageType": "default", "ImageExt": "bmp"}, "InvalidParameter.ImageExt"),
        ({"ImageType": "default", "Title": "y" * 129}, "LengthExceededMax"),
    ],
)
def test_create_upload_image_rejects_bad_parameters(world: World, params: dict, code: str) -> None:
    expect_error(world, code, 400, CreateUploadImageRequest.CreateUploadImageRequest, **params)


# ---------------------------------------------------------------- attached media


def test_attached_media_lifecycle(world: World) -> None:
    created = world.vod(CreateUploadAttachedMediaRequest.CreateUploadAttachedMediaRequest, BusinessType="subtitle",
                        MediaExt="vtt", Title="captions", FileName="en.vtt", CateIds="3,4")
    key = decode(created["UploadAddress"])["FileName"]
    assert key.startswith("attached/subtitle/") and key.endswith(".vtt")
    ghost = "c" * 32
    listed = world.vod(GetAttachedMediaInfoRequest.GetAttachedMediaInfoRequest,
                       MediaIds=f"{created['MediaId']},{ghost}")
    assert listed["NonExistMediaIds"] == [ghost]
    (media,) = listed["AttachedMediaList"]
    assert (media["Status"], media["Type"], media["Title"]) == ("Uploading", "subtitle", "captions")
    assert [c["CateId"] for c in media["Categories"]] == [3, 4]

    world.upload(created, b"WEBVTT\n")
    world.vod(UpdateAttachedMediaInfosRequest.UpdateAttachedMediaInfosRequest,
              UpdateContent=json.dumps([{"MediaId": created["MediaId"], "Title": "English"}]))
    (media,) = world.vod(GetAttachedMediaInfoRequest.GetAttachedMediaInfoRequest,
                         MediaIds=created["MediaId"])["AttachedMediaList"]
    assert (media["Status"], media["Title"]) == ("Normal", "English")

    result = world.vod(DeleteAttachedMediaRequest.DeleteAttachedMediaRequest, MediaIds=f"{created['MediaId']},{ghost}")
    assert result["NonExistMediaIds"] == [ghost]
    listed = world.vod(GetAttachedMediaInfoRequest.GetAttachedMediaInfoRequest, MediaIds=created["MediaId"])
    assert listed["AttachedMediaList"] == [] and listed["NonExistMediaIds"] == [created["MediaId"]]


def test_attached_media_extension_must_suit_the_business_type(world: World) -> None:
    expect_error(world, "InvalidParameter.MediaExt", 400,
                 CreateUploadAttachedMediaRequest.CreateUploadAttachedMediaRequest,
                 BusinessType="watermark", MediaExt="srt")
    expect_error(world, "InvalidParameter.BusinessType", 400,
                 CreateUploadAttachedMediaRequest.CreateUploadAttachedMediaRequest,
                 BusinessType="poster", MediaExt="png")


# ---------------------------------------------------------------- RegisterMedia


def test_register_media_is_idempotent_per_file_url(world: World) -> None:
    bucket = world.bucket()
    world.put_object(bucket, "in/a b.mp4", b"0" * 64)
    url = world.file_url(bucket, "in/a b.mp4")
    missing_url = world.file_url(bucket, "in/missing.mp4")
    metadatas = [{"FileURL": url, "Title": "registered"}, {"FileURL": missing_url, "Title": "nope"}]

    first = world.vod(RegisterMediaRequest.RegisterMediaRequest, RegisterMetadatas=json.dumps(metadatas))
    (entry,) = first["RegisteredMediaList"]
    answered = url.replace("http://", "https://", 1)  # the service may answer with another scheme
    assert entry["FileURL"] == answered and entry["NewRegister"] is True
    assert first["FailedFileURLs"] == [missing_url]
    video = video_info(world, VideoId=entry["MediaId"])
    assert (video["Title"], video["Status"], video["Size"]) == ("registered", "Normal", 64)

    again = world.vod(RegisterMediaRequest.RegisterMediaRequest, RegisterMetadatas=json.dumps(metadatas[:1]))
    assert again["RegisteredMediaList"] == [{"MediaId": entry["MediaId"], "FileURL": answered, "NewRegister": False}]
    assert again["FailedFileURLs"] == []

    too_many = [{"FileURL": world.file_url(bucket, f"x{i}.mp4")} for i in range(11)]
    expect_error(world, "InvalidParameter.RegisterMetadatas", 400, RegisterMediaRequest.RegisterMediaRequest,
                 RegisterMetadatas=json.dumps(too_many))


def test_register_media_accepts_the_real_oss_url_form(world: World) -> None:
    bucket = world.bucket()
    world.put_object(bucket, "real/form.mp4", b"1" * 8)
    url = f"https://{bucket}.oss-cn-shanghai.aliyuncs.com/real/form.mp4"
    result = world.vod(RegisterMediaRequest.RegisterMediaRequest,
                       RegisterMetadatas=json.dumps([{"FileURL": url, "Title": "t"}]))
    assert result["RegisteredMediaList"][0]["NewRegister"] is True


def test_registered_media_transcodes_only_with_a_template(slow_world: World) -> None:
    bucket = slow_world.bucket()
    slow_world.put_object(bucket, "tpl/a.mp4", b"abc")
    url = slow_world.file_url(bucket, "tpl/a.mp4")
    result = slow_world.vod(RegisterMediaRequest.RegisterMediaRequest, TemplateGroupId="1" * 32,
                            RegisterMetadatas=json.dumps([{"FileURL": url, "Title": "t"}]))
    media_id = result["RegisteredMediaList"][0]["MediaId"]
    assert video_info(slow_world, VideoId=media_id)["Status"] == "UploadSucc"
    slow_world.advance(10)
    assert video_info(slow_world, VideoId=media_id)["Status"] == "Normal"


# ---------------------------------------------------------------- SearchMedia


def test_search_media_by_title_and_status_with_paging(world: World) -> None:
    ids = [create_video(world, f"match {i:02d}")["VideoId"] for i in range(25)]
    other = create_video(world, "something else", TemplateGroupId="VOD_NO_TRANSCODE")
    world.upload(other, b"1")

    def search(**params) -> dict:
        return world.vod(SearchMediaRequest.SearchMediaRequest, **params)

    page1 = search(Match="Title = 'match'", PageNo=1, PageSize=10, SortBy="CreationTime:Asc",
                   Fields="Title,Status")
    assert page1["Total"] == 25
    assert [m["MediaId"] for m in page1["MediaList"]] == ids[:10]
    assert page1["MediaList"][0]["MediaType"] == "video"
    assert page1["MediaList"][0]["Video"] == {"Title": "match 00", "Status": "Uploading"}
    page3 = search(Match="Title = 'match'", PageNo=3, PageSize=10, SortBy="CreationTime:Asc")
    assert [m["MediaId"] for m in page3["MediaList"]] == ids[20:]
    newest = search(Match="Title = 'match'", PageSize=5)  # CreationTime:Desc is the default
    assert [m["MediaId"] for m in newest["MediaList"]] == ids[::-1][:5]

    normal = search(Match="Status in ('Normal')")
    assert [m["MediaId"] for m in normal["MediaList"]] == [other["VideoId"]]
    both = search(Match="Title = 'match 0' and Status in ('Uploading','Normal')", PageSize=100)
    assert both["Total"] == 10

    assert search(SearchType="image")["Total"] == 0
    expect_error(world, "InvalidParameter.PageSize", 400, SearchMediaRequest.SearchMediaRequest, PageSize=101)
    expect_error(world, "InvalidParameter.Match", 400, SearchMediaRequest.SearchMediaRequest, Match="Title ~ 'x'")


def test_search_media_by_media_id(world: World) -> None:
    created = create_video(world, ReferenceId="search-ref-1")
    create_video(world, ReferenceId="search-ref-2")
    by_id = world.vod(SearchMediaRequest.SearchMediaRequest, Match=f"MediaId = '{created['VideoId']}'")
    assert by_id["Total"] == 1


def test_search_media_returns_and_searches_only_what_the_service_offers(world: World) -> None:
    """vod-api.md §00: without Fields only ID, creation time and type come back; ReferenceId and
    UserData are neither searchable nor returned; Status supports only `in (...)`."""
    created = create_video(world, "plain", ReferenceId="search-ref-9", UserData='{"Extend":{"k":"v"}}')
    bare = world.vod(SearchMediaRequest.SearchMediaRequest, Match="Title = 'plain'")
    assert bare["MediaList"] == [{"MediaType": "video", "MediaId": created["VideoId"],
                                  "CreationTime": bare["MediaList"][0]["CreationTime"]}]
    for match in ("ReferenceId = 'search-ref-9'", "UserData = 'x'", "Status = 'Uploading'"):
        expect_error(world, "InvalidParameter.Match", 400, SearchMediaRequest.SearchMediaRequest, Match=match)
    for fields in ("Title,ReferenceId", "UserData", "ImageType"):
        expect_error(world, "InvalidParameter.Fields", 400, SearchMediaRequest.SearchMediaRequest,
                     Match="Title = 'plain'", Fields=fields)
    window = world.vod(SearchMediaRequest.SearchMediaRequest, Fields="Title,CreationTime",
                       Match="Status in ('Uploading') and CreationTime = ('2000-01-01T00:00:00Z','2999-01-01T00:00:00Z')")
    assert [m["Video"]["Title"] for m in window["MediaList"]] == ["plain"]


def test_search_images_and_attached(world: World) -> None:
    image = world.vod(CreateUploadImageRequest.CreateUploadImageRequest, ImageType="cover", Title="logo")
    world.vod(CreateUploadAttachedMediaRequest.CreateUploadAttachedMediaRequest, BusinessType="watermark",
              MediaExt="png", Title="mark")
    images = world.vod(SearchMediaRequest.SearchMediaRequest, SearchType="image", Match="Title = 'logo'",
                       Fields="ImageType")
    assert [m["MediaId"] for m in images["MediaList"]] == [image["ImageId"]]
    assert images["MediaList"][0]["Image"] == {"ImageType": "cover"}
    attached = world.vod(SearchMediaRequest.SearchMediaRequest, SearchType="attached", Fields="Title")
    assert attached["Total"] == 1 and attached["MediaList"][0]["AttachedMedia"]["Title"] == "mark"


# ---------------------------------------------------------------- snapshot / restore


def test_snapshot_restore_round_trip(world: World) -> None:
    created = create_video(world, "persist", ReferenceId="persist-1", Tags="k")
    model = world.model
    if model is None:
        pytest.skip("needs direct access to the VodModel")
    data = json.loads(json.dumps(model.snapshot()))
    (entry,) = data["videos"]
    assert (entry["VideoId"], entry["Status"], entry["ReferenceId"], entry["Tags"]) == (
        created["VideoId"], "Uploading", "persist-1", "k")
    model.reset()
    expect_error(world, "InvalidVideo.NotFound", 404, GetVideoInfoRequest.GetVideoInfoRequest,
                 VideoId=created["VideoId"])
    model.restore(data)
    assert video_info(world, ReferenceId="persist-1")["VideoId"] == created["VideoId"]
    world.upload(created, b"after restore")
    assert video_info(world, VideoId=created["VideoId"])["Status"] == "Normal"


def test_upload_address_is_plain_base64_json(world: World) -> None:
    created = create_video(world)
    raw = base64.b64decode(created["UploadAddress"], validate=True)
    assert set(json.loads(raw)) == {"Endpoint", "Bucket", "FileName"}
