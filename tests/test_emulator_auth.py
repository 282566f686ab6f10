"""RPC signatures, timestamps and nonces (real aliyunsdkcore), STS tokens, and the doc's test vector."""

from __future__ import annotations

import importlib
import json
import time

import pytest
import requests
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.auth.composer.rpc_signature_composer import get_signed_url
from aliyunsdkcore.client import AcsClient

from vodsync.emulator.auth import StsIssuer, rpc_signature, rpc_string_to_sign
from vodsync.emulator.clock import Clock


def _vod_request(action: str, **params: str):
    """The typed aliyunsdkvod request class for `action`, as vodsync's client uses them."""
    module = importlib.import_module(f"aliyunsdkvod.request.v20170321.{action}Request")
    request = getattr(module, f"{action}Request")()
    for name, value in params.items():
        request.add_query_param(name, value)
    return request


def _client(emulator, key_id="emulator", secret="emulator-secret") -> AcsClient:
    client = AcsClient(key_id, secret, "cn-shanghai", port=emulator.port)
    client.add_endpoint("cn-shanghai", "vod", "127.0.0.1")
    return client


def _signed_url(emulator, method: str, params: dict[str, str], body: dict[str, str] | None = None) -> str:
    """A URL signed by the SDK's own composer (not by the code under test)."""
    query = {"Action": "GetVideoInfo", "Version": "2017-03-21", "RegionId": "cn-shanghai", **params}
    path, _ = get_signed_url(query, "emulator", "emulator-secret", "JSON", method, body or {})
    return emulator.url + path


def test_the_documented_test_vector():
    params = {
        "Timestamp": "2017-10-10T12:02:54Z", "Format": "JSON", "AccessKeyId": "testAccessKeyId",
        "Action": "GetVideoPlayAuth", "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "8f8a035d-6496-4268-afd4-67c22837e38d", "Version": "2017-03-21",
        "SignatureVersion": "1.0", "VideoId": "5aed81b74ba84920be578cdfe004af4b",
    }
    string_to_sign = rpc_string_to_sign("GET", params)
    assert string_to_sign == (
        "GET&%2F&AccessKeyId%3DtestAccessKeyId%26Action%3DGetVideoPlayAuth%26Format%3DJSON"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D8f8a035d-6496-4268-afd4-67c22837e38d"
        "%26SignatureVersion%3D1.0%26Timestamp%3D2017-10-10T12%253A02%253A54Z%26Version%3D2017-03-21"
        "%26VideoId%3D5aed81b74ba84920be578cdfe004af4b"
    )
    assert rpc_signature(string_to_sign, "testAccessKeySecret") == "Ibgh7y8Vp47LBuAsf5Xhi1SvDss="


def test_sdk_signed_call_reaches_the_model(emulator, vod_sdk_client):
    with pytest.raises(ServerException) as exc:
        vod_sdk_client.do_action_with_exception(_vod_request("GetVideoInfo", VideoId="0" * 32))
    assert exc.value.get_error_code() == "InvalidVideo.NotFound"  # past auth: the model answered
    assert exc.value.get_http_status() == 404
    assert emulator.calls()["GetVideoInfo"] == 1


def test_wrong_secret_is_signature_does_not_match(emulator):
    with pytest.raises(ServerException) as exc:
        _client(emulator, secret="not-the-secret").do_action_with_exception(_vod_request("GetVideoInfo", VideoId="x"))
    # The server's string-to-sign equals the SDK's, so the SDK itself renames the code
    # (typed requests only: CommonRequest keeps SignatureDoesNotMatch).
    assert exc.value.get_error_code() == "InvalidAccessKeySecret"
    assert exc.value.get_http_status() == 400

    url = _signed_url(emulator, "POST", {"VideoId": "x"}).replace("Signature=", "Signature=AAAA")
    body = requests.post(url, timeout=10).json()
    assert body["Code"] == "SignatureDoesNotMatch"
    assert body["Message"].split(":")[1].startswith("POST&%2F&AccessKeyId%3Demulator")
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}


def test_unknown_access_key(emulator):
    with pytest.raises(ServerException) as exc:
        _client(emulator, key_id="nobody").do_action_with_exception(_vod_request("GetVideoInfo", VideoId="x"))
    assert exc.value.get_error_code() == "InvalidAccessKeyId.NotFound"
    assert exc.value.get_http_status() == 404


def test_stale_timestamp_when_the_clients_clock_stays_behind(emulator, vod_sdk_client):
    emulator.advance(20 * 60, client_follows=False)
    with pytest.raises(ServerException) as exc:
        vod_sdk_client.do_action_with_exception(_vod_request("GetVideoInfo", VideoId="x"))
    assert exc.value.get_error_code() == "InvalidTimeStamp.Expired"
    assert exc.value.get_http_status() == 400


def test_plain_advance_keeps_rpc_working(emulator, vod_sdk_client):
    emulator.advance(3001)  # e.g. to expire upload credentials; clients' clocks are taken to move too
    with pytest.raises(ServerException) as exc:
        vod_sdk_client.do_action_with_exception(_vod_request("GetVideoInfo", VideoId="x"))
    assert exc.value.get_error_code() == "InvalidVideo.NotFound"


def test_reused_nonce_is_rejected(emulator):
    url = _signed_url(emulator, "POST", {"VideoId": "x"})
    first = requests.post(url, timeout=10)
    assert first.json()["Code"] == "InvalidVideo.NotFound"
    second = requests.post(url, timeout=10)
    assert (second.status_code, second.json()["Code"]) == (400, "SignatureNonceUsed")


def test_get_and_form_bodies_are_accepted(emulator):
    got = requests.get(_signed_url(emulator, "GET", {"VideoId": "x"}), timeout=10)
    assert got.json()["Code"] == "InvalidVideo.NotFound"

    form = {"VideoId": "y"}
    posted = requests.post(_signed_url(emulator, "POST", {}, body=form), data=form, timeout=10)
    assert posted.json()["Code"] == "InvalidVideo.NotFound"
    tampered = requests.post(_signed_url(emulator, "POST", {}, body=form), data={"VideoId": "z"}, timeout=10)
    assert tampered.json()["Code"] == "SignatureDoesNotMatch"


def test_missing_signature_and_unknown_action(emulator):
    bare = requests.post(emulator.url + "/?Action=GetVideoInfo&VideoId=x", timeout=10)
    assert (bare.status_code, bare.json()["Code"]) == (400, "MissingParameter")
    unknown = requests.post(_signed_url(emulator, "POST", {"Action": "NoSuchAction"}), timeout=10)
    assert unknown.status_code >= 400 and unknown.json()["Code"] != "SignatureDoesNotMatch"


def test_sts_issuer_mints_upload_auth_and_survives_snapshot():
    clock = Clock()
    issuer = StsIssuer(clock, ttl_seconds=3000, region="cn-shanghai")
    auth = issuer.mint("outin-bucket", "sv/a/a.mp4")
    assert set(auth) == {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration", "ExpireUTCTime", "Region"}
    assert auth["AccessKeyId"].startswith("STS.")
    assert auth["Expiration"] == "3000"
    assert auth["Region"] == "cn-shanghai"
    expires = time.mktime(time.strptime(auth["ExpireUTCTime"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(expires - (clock.now() + 3000)) <= 2

    token = issuer.lookup(auth["AccessKeyId"])
    assert token.covers("outin-bucket", "sv/a/a.mp4")
    assert not token.covers("outin-bucket", "sv/a/b.mp4") and not token.covers("other", "sv/a/a.mp4")
    assert not issuer.is_expired(token)
    clock.advance(3000)
    assert issuer.is_expired(token)

    restored = StsIssuer(clock, 3000, "cn-shanghai")
    restored.restore(json.loads(json.dumps(issuer.snapshot())))
    assert restored.lookup(auth["AccessKeyId"]) == token
