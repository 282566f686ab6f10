"""The shared API budget (`cloud/budget.py`): GCRA bucket math on an injected clock, the documented
limits and the config's `api_limits:` overrides, every VOD attempt taking a token, and the pacing
the emulator sees from a real `apply`."""

from __future__ import annotations

import re
import textwrap
import threading
from pathlib import Path

import pytest
import requests

pytest.register_assert_rewrite("clikit")
from clikit import mp4  # noqa: E402
from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION  # noqa: E402

from vodsync.api_limits import DOCUMENTED_QPS, OPERATIONS  # noqa: E402
from vodsync.cloud.budget import Budget, Limit, LocalTokens, TokenStore  # noqa: E402
from vodsync.cloud.settings import CloudSettings  # noqa: E402
from vodsync.cloud.vod import VodClient  # noqa: E402
from vodsync.config import load_config  # noqa: E402
from vodsync.errors import ConfigError  # noqa: E402

pytest_plugins = ["clikit"]  # the `ws` fixture


class FakeClock:
    """Monotonic seconds that move only when told to (or when a fake sleep sleeps)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class RecordingTokens:
    """A TokenStore that grants every call at once and remembers what it was asked."""

    def __init__(self) -> None:
        self.taken: list[tuple[str, float, float]] = []

    def take(self, op: str, rate: float, burst: float) -> float:
        self.taken.append((op, rate, burst))
        return 0.0


def approx(values: list[float]) -> list[float]:
    return [round(v, 9) for v in values]


# ---------------------------------------------------------------------- the bucket math


def test_burst_one_spaces_calls_made_together_one_interval_apart():
    clock = FakeClock()
    tokens = LocalTokens(clock)
    assert approx([tokens.take("CreateUploadVideo", 5, 1) for _ in range(4)]) == [0.0, 0.2, 0.4, 0.6]


def test_a_burst_goes_at_once_then_the_rate_holds():
    tokens = LocalTokens(FakeClock())
    assert approx([tokens.take("op", 2, 3) for _ in range(5)]) == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_a_quiet_spell_refills_the_bucket_but_never_beyond_its_burst():
    clock = FakeClock()
    tokens = LocalTokens(clock)
    assert approx([tokens.take("op", 4, 2) for _ in range(3)]) == [0.0, 0.0, 0.25]
    clock.now += 3600  # an hour of nothing: still only `burst` calls at once
    assert approx([tokens.take("op", 4, 2) for _ in range(3)]) == [0.0, 0.0, 0.25]


def test_a_reserved_slot_is_kept_so_callers_that_waited_go_at_the_rate():
    clock = FakeClock()
    tokens = LocalTokens(clock)
    sent = []
    for _ in range(10):  # each caller waits what it is told, then sends
        clock.sleep(tokens.take("op", 5, 1))
        sent.append(clock.now)
    gaps = approx([b - a for a, b in zip(sent, sent[1:], strict=False)])
    assert gaps == [0.2] * 9


def test_operations_have_buckets_of_their_own():
    tokens = LocalTokens(FakeClock())
    assert tokens.take("CreateUploadVideo", 1, 1) == 0.0
    assert tokens.take("SearchMedia", 1, 1) == 0.0
    assert tokens.take("CreateUploadVideo", 1, 1) == pytest.approx(1.0)


def test_concurrent_callers_are_spread_out_not_released_together():
    clock = FakeClock()
    tokens = LocalTokens(clock)
    start = threading.Barrier(20)
    waits: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        start.wait()
        wait = tokens.take("CreateUploadVideo", 5, 1)
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert approx(sorted(waits)) == approx([i * 0.2 for i in range(20)])


# ---------------------------------------------------------------------- limits and overrides


def test_documented_limits_are_the_defaults():
    limits = Budget(tokens=RecordingTokens()).limits
    assert limits["CreateUploadVideo"] == Limit(80.0)  # 80-120/s by region: the lower bound
    assert limits["RefreshUploadVideo"].rate == 80.0
    assert limits["CreateUploadImage"].rate == limits["CreateUploadAttachedMedia"].rate == 100.0
    assert limits["RegisterMedia"].rate == limits["SearchMedia"].rate == 50.0
    assert limits["GetVideoInfos"].rate == 100.0 and limits["DeleteVideo"].rate == 30.0
    assert limits["UploadMediaByURL"].rate == pytest.approx(200_000 / 86_400)
    assert "GetImageInfo" not in limits  # no documented limit: not paced


def test_overrides_replace_a_default_and_can_pace_an_undocumented_operation():
    store = RecordingTokens()
    budget = Budget({"CreateUploadVideo": 40, "GetImageInfo": 7.5}, tokens=store)
    assert budget.limits["CreateUploadVideo"] == Limit(40.0)
    assert budget.limits["SearchMedia"] == Limit(50.0)  # the others keep their defaults
    for op in ("CreateUploadVideo", "GetImageInfo", "DeleteImage"):
        budget.acquire(op)
    assert store.taken == [("CreateUploadVideo", 40.0, 1.0), ("GetImageInfo", 7.5, 1.0)]


def test_acquire_sleeps_what_the_store_says():
    clock = FakeClock()
    budget = Budget({"CreateUploadVideo": 5}, tokens=LocalTokens(clock), sleep=clock.sleep)
    assert approx([budget.acquire("CreateUploadVideo") for _ in range(3)]) == [0.0, 0.2, 0.2]
    assert clock.now == pytest.approx(1000.4)


def test_a_limit_must_be_positive():
    with pytest.raises(ValueError):
        Limit(0)
    with pytest.raises(ValueError):
        Budget({"CreateUploadVideo": -1})


def test_local_tokens_is_a_token_store():
    store: TokenStore = LocalTokens()
    assert store.take("op", 1e6, 1) == 0.0


def test_every_operation_the_client_calls_can_be_limited():
    source = (Path(__file__).parent.parent / "vodsync" / "cloud" / "vod.py").read_text()
    called = set(re.findall(r'(?:_call|_create|_update_infos)\(\s*"([A-Za-z]+)"', source))
    assert {"CreateUploadVideo", "UpdateImageInfos", "SearchMedia"} <= called
    assert called <= OPERATIONS
    assert set(DOCUMENTED_QPS) <= OPERATIONS


# ---------------------------------------------------------------------- the config


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vodsync.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    path.chmod(0o600)
    return path


def test_config_api_limits_are_read(tmp_path):
    path = _config(tmp_path, "api_limits: {CreateUploadVideo: 40, RegisterMedia: 2.5}\n")
    assert load_config(path, env={}).api_limits == {"CreateUploadVideo": 40.0, "RegisterMedia": 2.5}
    assert load_config(_config(tmp_path, "region: cn-shanghai\n"), env={}).api_limits == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "region: cn-shanghai\napi_limits:\n  SearchMedia: 3\n  CreateUploadVide: 40\n",
            ":4: api_limits.CreateUploadVide: unknown VOD operation 'CreateUploadVide'; did you mean "
            "CreateUploadVideo?",
        ),
        (
            "api_limits: {Transcode: 1}\n",
            ":1: api_limits.Transcode: unknown VOD operation 'Transcode'; vodsync "
            "calls: CancelUrlUploadJobs, CreateUploadAttachedMedia",
        ),
        ("api_limits:\n  CreateUploadVideo: 0\n", ":2: api_limits.CreateUploadVideo: must be greater than 0"),
        ("api_limits:\n  DeleteVideo: -3\n", ":2: api_limits.DeleteVideo: must be greater than 0"),
        ("api_limits:\n  SearchMedia: '5'\n", ":2: api_limits.SearchMedia: expected a number, got a string"),
        ("api_limits:\n  SearchMedia: fast\n", ":2: api_limits.SearchMedia: expected a number, got a string"),
        (
            "api_limits:\n  SearchMedia: true\n",
            ":2: api_limits.SearchMedia: expected a number, got true/false",
        ),
        ("api_limits:\n  SearchMedia: .inf\n", ":2: api_limits.SearchMedia: must be a finite number"),
        (
            "api_limits: [CreateUploadVideo]\n",
            ":1: api_limits: expected a mapping of VOD operation to calls per second, got a list",
        ),
    ],
)
def test_config_api_limits_errors_name_file_line_and_key(tmp_path, text, expected):
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert f"{path}{expected}" in str(caught.value)


# ---------------------------------------------------------------------- every VOD attempt takes a token


def _client(emulator, budget: Budget, slept: list[float]) -> VodClient:
    settings = CloudSettings(ACCESS_KEY_ID, ACCESS_KEY_SECRET, region=REGION, endpoint=emulator.url)
    return VodClient(settings, sleep=slept.append, budget=budget)


def test_each_attempt_of_a_call_takes_a_token_and_throttling_still_backs_off(emulator):
    store = RecordingTokens()
    backoff: list[float] = []
    client = _client(emulator, Budget({"CreateUploadVideo": 5}, tokens=store), backoff)
    emulator.set_faults([{"match": "CreateUploadVideo", "error": "Throttling.User", "count": 2}])

    ticket = client.create_upload_video(title="t", file_name="t.mp4")
    client.get_video_infos([ticket.media_id])

    assert store.taken == [("CreateUploadVideo", 5.0, 1.0)] * 3 + [("GetVideoInfos", 100.0, 1.0)]
    assert len(backoff) == 2  # the two throttled attempts were backed off as before


def test_the_client_waits_for_its_token_before_the_request_goes(emulator):
    clock = FakeClock()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.sleep(seconds)

    client = _client(emulator, Budget({"CreateUploadVideo": 2}, tokens=LocalTokens(clock), sleep=sleep), [])
    for n in range(3):
        client.create_upload_video(title=f"t{n}", file_name="t.mp4")
    assert approx(waits) == [0.5, 0.5]
    assert len(emulator.call_times("CreateUploadVideo")) == 3


def test_the_settings_limits_make_the_default_budget():
    settings = CloudSettings("id", "secret", api_limits={"CreateUploadVideo": 3})
    client = VodClient(settings)
    assert client._budget.limits["CreateUploadVideo"] == Limit(3.0)


# ---------------------------------------------------------------------- end to end: what the service sees


def test_apply_keeps_creates_under_the_configured_rate_at_the_emulator(ws, emulator):
    rate, count = 5, 20
    ws.manifest(
        [
            {
                "name": f"clip-{n:02d}",
                "type": "video",
                "file": f"media/clip-{n:02d}.mp4",
                "title": f"Clip {n}",
            }
            for n in range(count)
        ]
    )
    for n in range(count):
        ws.file(f"media/clip-{n:02d}.mp4", mp4(300, bytes([65 + n])))
    config = _config(ws.root, f"api_limits: {{CreateUploadVideo: {rate}}}\nconcurrency: 4\n")

    run = ws.cli("apply", "--config", str(config), "--wait", "20")
    assert run.code == 0, run

    times = requests.get(
        f"{emulator.url}/_emulator/calls", params={"action": "CreateUploadVideo"}, timeout=10
    ).json()
    assert len(times) == count
    # Never more than 2x the rate in any one second (the bound; burst 1 keeps it near `rate`) ...
    busiest = max(sum(1 for t in times if start <= t < start + 1) for start in times)
    assert busiest <= 2 * rate
    # ... and no more than `rate` a second on average: the n-1 gaps take at least (n-1)/rate seconds,
    # less the jitter between the client's pacing and the request's arrival (0.2 s allowed).
    assert times[-1] - times[0] >= (count - 1) / rate - 0.2
