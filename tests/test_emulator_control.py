"""The control plane (state, reset, faults, advance), the CLI process, and persistence across restarts."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import oss2
import pytest
import requests
from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkvod.request.v20170321.CreateUploadVideoRequest import CreateUploadVideoRequest
from aliyunsdkvod.request.v20170321.GetVideoInfoRequest import GetVideoInfoRequest

from vodsync.emulator import Emulator


def _create_video(client, title: str = "clip") -> dict:
    request = CreateUploadVideoRequest()
    request.set_Title(title)
    request.set_FileName("clip.mp4")
    return json.loads(client.do_action_with_exception(request))


def _get_video(client, video_id: str) -> dict:
    request = GetVideoInfoRequest()
    request.set_VideoId(video_id)
    return json.loads(client.do_action_with_exception(request))


def _missing_video_outcome(client) -> str:
    try:
        _get_video(client, "0" * 32)
    except ServerException as exc:
        return exc.get_error_code()
    return "ok"


def _control(emulator, method: str, name: str, body: dict | None = None) -> requests.Response:
    return requests.request(method, f"{emulator.url}/_emulator/{name}", json=body, timeout=10)


# ---------------------------------------------------------------------- state, reset, advance


def test_state_lists_media_objects_uploads_and_call_counts(emulator, vod_sdk_client, account_bucket):
    created = _create_video(vod_sdk_client)
    account_bucket.put_object("a.mp4", b"abc")
    account_bucket.init_multipart_upload("open.mp4")
    _control(emulator, "GET", "state")  # control calls are not counted

    state = _control(emulator, "GET", "state").json()
    assert {"videos", "images", "attached", "url_jobs", "objects", "multipart_uploads", "calls", "now"} <= set(state)
    assert [v["VideoId"] for v in state["videos"]] == [created["VideoId"]]
    assert {"bucket": "test-bucket", "key": "a.mp4", "size": 3, "etag": "900150983CD24FB0D6963F7D28E17F72",
            "crc64": account_bucket.head_object("a.mp4").server_crc} in state["objects"]
    assert [(u["bucket"], u["key"], u["parts"]) for u in state["multipart_uploads"]] == [("test-bucket", "open.mp4", 0)]
    assert state["calls"] == {"CreateUploadVideo": 1, "oss:PUT": 2, "oss:POST": 1}
    assert abs(state["now"] - time.time()) < 5


def test_reset_empties_the_account(emulator, vod_sdk_client, account_bucket):
    _create_video(vod_sdk_client)
    account_bucket.put_object("a.mp4", b"abc")
    emulator.advance(500)
    assert _control(emulator, "POST", "reset").json() == {"ok": True}
    state = emulator.state()
    assert (state["videos"], state["objects"], state["calls"]) == ([], [], {})
    assert abs(state["now"] - time.time()) < 5  # the clock is back at real time
    account_bucket.put_object("b.mp4", b"buckets survive a reset")


def test_calls_lists_when_each_request_of_an_action_arrived_on_the_emulator_clock(emulator, vod_sdk_client):
    before = emulator.clock.now()
    _create_video(vod_sdk_client)
    emulator.advance(100)
    _create_video(vod_sdk_client)
    _missing_video_outcome(vod_sdk_client)  # a refused call arrived too, and is listed

    times = _control(emulator, "GET", "calls?action=CreateUploadVideo").json()
    assert len(times) == 2 and before <= times[0] and times[1] - times[0] >= 100
    assert times[1] <= _control(emulator, "GET", "state").json()["now"]
    everything = _control(emulator, "GET", "calls").json()
    assert everything["CreateUploadVideo"] == times and len(everything["GetVideoInfo"]) == 1
    assert _control(emulator, "GET", "calls?action=DeleteVideo").json() == []
    _control(emulator, "POST", "reset")
    assert _control(emulator, "GET", "calls").json() == {}


def test_advance_moves_emulator_time(emulator):
    before = emulator.state()["now"]
    now = _control(emulator, "POST", "advance", {"seconds": 3600}).json()["now"]
    assert 3600 <= now - before < 3610
    assert _control(emulator, "POST", "advance", {"seconds": "soon"}).status_code == 400
    assert _control(emulator, "POST", "advance", {"seconds": -1}).status_code == 400


def test_sts_endpoint_mints_upload_credentials(emulator, account_bucket):
    auth = _control(emulator, "POST", "sts", {"bucket": "test-bucket", "key": "x.mp4"}).json()
    bucket = oss2.Bucket(oss2.StsAuth(auth["AccessKeyId"], auth["AccessKeySecret"], auth["SecurityToken"],
                                      auth_version="v4"), emulator.url, "test-bucket", region=auth["Region"])
    bucket.put_object("x.mp4", b"ok")


def test_unknown_control_endpoint(emulator):
    assert _control(emulator, "GET", "nope").status_code == 404


# ---------------------------------------------------------------------- faults


def test_count_fault_fails_the_next_n_matching_calls(emulator, vod_sdk_client):
    rules = [{"match": "CreateUploadVideo", "error": "Throttling.User", "count": 2}]
    assert _control(emulator, "POST", "faults", {"rules": rules}).status_code == 200
    assert _missing_video_outcome(vod_sdk_client) == "InvalidVideo.NotFound"  # other actions untouched
    for _ in range(2):
        with pytest.raises(ServerException) as exc:
            _create_video(vod_sdk_client)
        assert (exc.value.get_error_code(), exc.value.get_http_status()) == ("Throttling.User", 400)
    _create_video(vod_sdk_client)
    assert emulator.calls()["CreateUploadVideo"] == 3
    assert _control(emulator, "GET", "faults").json()["rules"][0]["remaining"] == 0


def test_rate_fault_is_repeatable_with_a_seed(emulator, vod_sdk_client):
    def pattern(seed: int) -> list[str]:
        emulator.set_faults([{"match": "*", "error": "ServiceUnavailable", "rate": 0.5}], seed=seed)
        return [_missing_video_outcome(vod_sdk_client) for _ in range(24)]

    first = pattern(7)
    assert set(first) == {"ServiceUnavailable", "InvalidVideo.NotFound"}
    assert pattern(7) == first

    _control(emulator, "POST", "faults", {"rules": [{"match": "*", "error": "InternalError", "rate": 1}]})
    with pytest.raises(ServerException) as exc:
        _get_video(vod_sdk_client, "x")
    assert (exc.value.get_error_code(), exc.value.get_http_status()) == ("InternalError", 500)
    _control(emulator, "POST", "faults", {"rules": []})
    assert _missing_video_outcome(vod_sdk_client) == "InvalidVideo.NotFound"


def test_reset_fault_drops_the_connection(emulator, vod_sdk_client):
    emulator.set_faults([{"match": "GetVideoInfo", "error": "reset", "count": 1}])
    with pytest.raises(ClientException) as exc:
        _get_video(vod_sdk_client, "x")
    assert exc.value.get_error_code() == "SDK.HttpError"
    assert _missing_video_outcome(vod_sdk_client) == "InvalidVideo.NotFound"


def test_slow_fault_delays_then_serves(emulator, vod_sdk_client):
    emulator.set_faults([{"match": "GetVideoInfo", "error": "slow", "delay_ms": 300, "count": 1}])
    started = time.monotonic()
    assert _missing_video_outcome(vod_sdk_client) == "InvalidVideo.NotFound"
    assert time.monotonic() - started >= 0.3


def test_slow_fault_with_bandwidth_paces_the_request_body(emulator, account_bucket):
    # One WAN stream: 1 MiB at 4 MiB/s cannot arrive in less than 0.25 s (a lower bound,
    # which pacing guarantees; no upper bound is asserted).
    emulator.set_faults([{"match": "oss:PUT", "error": "slow", "bytes_per_second": 4 * 1024 * 1024}])
    data = os.urandom(1024 * 1024)
    started = time.monotonic()
    account_bucket.put_object("paced.bin", data)
    assert time.monotonic() - started >= 0.25
    assert account_bucket.get_object("paced.bin").read() == data


def test_oss_faults_answer_in_oss_xml(emulator, account_bucket):
    emulator.set_faults([{"match": "oss:*", "error": "ServiceUnavailable", "count": 1},
                         {"match": "oss:PUT", "error": "SecurityTokenExpired", "count": 1},
                         {"match": "oss:PUT", "error": "InternalError", "count": 1}])
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        account_bucket.put_object("a.mp4", b"x" * 200_000)  # the body is drained, the connection kept
    assert (exc.value.status, exc.value.code) == (503, "ServiceUnavailable")
    assert exc.value.request_id
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        account_bucket.put_object("a.mp4", b"x")
    assert (exc.value.status, exc.value.code) == (403, "SecurityTokenExpired")
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        account_bucket.put_object("a.mp4", b"x")
    assert (exc.value.status, exc.value.code) == (500, "InternalError")
    account_bucket.put_object("a.mp4", b"x")
    assert account_bucket.get_object("a.mp4").read() == b"x"


def test_oss_reset_fault_raises_a_request_error(emulator, account_bucket):
    emulator.set_faults([{"match": "oss:GET", "error": "reset", "count": 1}])
    account_bucket.put_object("a.mp4", b"x")
    with pytest.raises(oss2.exceptions.RequestError):
        account_bucket.get_object("a.mp4").read()
    assert account_bucket.get_object("a.mp4").read() == b"x"


def test_bad_fault_rules_are_rejected(emulator):
    for rules in ([{"match": "*"}], [{"match": "*", "error": "NoSuchCode"}], [{"match": "*", "error": "slow",
                                                                                "rate": 2}], "all"):
        response = _control(emulator, "POST", "faults", {"rules": rules})
        assert response.status_code == 400, rules
    custom = [{"match": "*", "error": "Forbidden.RAM", "status": 403, "count": 1}]
    assert _control(emulator, "POST", "faults", {"rules": custom}).status_code == 200


# ---------------------------------------------------------------------- persistence


def test_data_dir_keeps_state_across_a_restart(tmp_path):
    data_dir = tmp_path / "emu"
    with Emulator(data_dir=data_dir) as first:
        client = AcsClient("emulator", "emulator-secret", "cn-shanghai", port=first.port)
        client.add_endpoint("cn-shanghai", "vod", "127.0.0.1")
        video = _create_video(client, "kept")
        account = oss2.Bucket(oss2.Auth("emulator", "emulator-secret"), first.url, "kept-bucket")
        account.create_bucket()
        account.put_object("a.mp4", b"persisted bytes")
        upload_id = account.init_multipart_upload("open.mp4").upload_id
        part = account.upload_part("open.mp4", upload_id, 1, b"p" * 100)
        auth = first.sts.mint("kept-bucket", "later.mp4")
        (tmp_path / "seed" / "demo-bucket").mkdir(parents=True)
        (tmp_path / "seed" / "demo-bucket" / "t.mp4").write_bytes(b"anyone may read")
        first.publish_directory(tmp_path / "seed")
        first.advance(120)

    with Emulator(data_dir=data_dir) as second:
        client = AcsClient("emulator", "emulator-secret", "cn-shanghai", port=second.port)
        client.add_endpoint("cn-shanghai", "vod", "127.0.0.1")
        assert _get_video(client, video["VideoId"])["Video"]["Title"] == "kept"
        account = oss2.Bucket(oss2.Auth("emulator", "emulator-secret"), second.url, "kept-bucket")
        assert account.get_object("a.mp4").read() == b"persisted bytes"
        assert [p.etag for p in account.list_parts("open.mp4", upload_id).parts] == [part.etag]
        sts = oss2.Bucket(oss2.StsAuth(auth["AccessKeyId"], auth["AccessKeySecret"], auth["SecurityToken"],
                                       auth_version="v4"), second.url, "kept-bucket", region=auth["Region"])
        sts.put_object("later.mp4", b"token still known")
        assert second.clock.now() - time.time() >= 119
        # A bucket's public-read ACL persists too (a restored URL job may download from it at once).
        public = requests.get(f"{second.url}/demo-bucket/t.mp4", timeout=10)
        assert (public.status_code, public.content) == (200, b"anyone may read")


# ---------------------------------------------------------------------- the CLI process


def _start_cli(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "vodsync", "emulator", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    if not selector.select(timeout=30):
        proc.kill()
        pytest.fail(f"emulator printed nothing: {proc.stderr.read()}")
    line = proc.stdout.readline()
    prefix = "vodsync emulator listening on http://127.0.0.1:"
    assert line.startswith(prefix) and line.endswith("\n"), line
    return proc, line.strip().rsplit(" ", 1)[1]


def _stop_cli(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        rest, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, rest


def test_cli_serves_and_exits_cleanly_on_sigterm():
    proc, url = _start_cli()
    try:
        assert requests.get(url + "/_emulator/state", timeout=10).status_code == 200
        bucket = oss2.Bucket(oss2.Auth("emulator", "emulator-secret"), url, "cli-bucket")
        bucket.create_bucket()
    finally:
        code, rest = _stop_cli(proc)
    assert (code, rest) == (0, "")  # exactly one line on stdout


def test_cli_sigint_also_exits_zero():
    proc, _ = _start_cli("--transcode-seconds", "5", "--sts-ttl", "60")
    assert _stop_cli(proc, signal.SIGINT)[0] == 0


def test_cli_data_dir_survives_a_kill(tmp_path: Path):
    data_dir = tmp_path / "emu"
    proc, url = _start_cli("--data-dir", str(data_dir))
    try:
        bucket = oss2.Bucket(oss2.Auth("emulator", "emulator-secret"), url, "cli-bucket")
        bucket.create_bucket()
        bucket.put_object("a.mp4", b"saved while running")
        deadline = time.monotonic() + 10
        snapshot = data_dir / "state.json"
        while b'"a.mp4"' not in (snapshot.read_bytes() if snapshot.exists() else b""):
            assert time.monotonic() < deadline, "no debounced snapshot within 10 s"
            time.sleep(0.05)
    finally:
        proc.kill()  # no clean shutdown: what was saved while running must suffice
        proc.wait(timeout=20)

    proc, url = _start_cli("--data-dir", str(data_dir))
    try:
        bucket = oss2.Bucket(oss2.Auth("emulator", "emulator-secret"), url, "cli-bucket")
        assert bucket.get_object("a.mp4").read() == b"saved while running"
    finally:
        assert _stop_cli(proc)[0] == 0
    assert not [p for p in os.listdir(data_dir) if p.endswith(".tmp")]


class _ExplodingModel:
    """A stand-in VodModel whose every call hits a bug."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs

    def call(self, action: str, params: dict) -> dict:
        raise RuntimeError("model bug")

    def snapshot(self) -> dict:
        return {"videos": [], "images": [], "attached": [], "url_jobs": []}

    def restore(self, data: dict) -> None: ...
    def reset(self) -> None: ...
    def close(self) -> None: ...


def test_a_model_bug_is_a_500_internal_error_not_a_dead_server(capsys):
    with Emulator(model_factory=_ExplodingModel) as emu:
        assert emu.model.kwargs["endpoint"] == emu.endpoint == emu.url
        client = AcsClient("emulator", "emulator-secret", "cn-shanghai", port=emu.port)
        client.add_endpoint("cn-shanghai", "vod", "127.0.0.1")
        for _ in range(2):
            with pytest.raises(ServerException) as exc:
                _get_video(client, "x")
            assert (exc.value.get_error_code(), exc.value.get_http_status()) == ("InternalError", 500)
        emu.oss.add_listener(lambda bucket, key, info: 1 / 0)
        emu.oss.ensure_bucket("any-bucket")
        bucket = oss2.Bucket(oss2.Auth("emulator", "emulator-secret"), emu.url, "any-bucket")
        bucket.put_object("a.mp4", b"stored despite the listener")
        assert bucket.get_object("a.mp4").read() == b"stored despite the listener"
    assert "model bug" in capsys.readouterr().err


def test_a_hold_rule_keeps_the_call_until_the_rules_are_replaced(emulator, account_bucket):
    import threading

    emulator.set_faults([{"match": "oss:PUT", "error": "hold", "count": 1}])
    done = threading.Event()
    worker = threading.Thread(target=lambda: (account_bucket.put_object("held", b"h" * 10), done.set()))
    worker.start()
    assert emulator.faults.wait_holding(1, timeout=10)
    account_bucket.put_object("free", b"f")  # the count is spent: the next PUT is not held
    shown = requests.get(f"{emulator.url}/_emulator/faults").json()["rules"]
    assert shown[0]["holding"] == 1 and not done.is_set()
    assert [o["key"] for o in emulator.state()["objects"]] == ["free"]
    requests.post(f"{emulator.url}/_emulator/faults", json={"rules": []})  # lets it go
    worker.join(10)
    assert done.is_set() and sorted(o["key"] for o in emulator.state()["objects"]) == ["free", "held"]
    assert emulator.faults.holding == 0
