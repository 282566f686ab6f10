"""No second submission, ever (issue 11, point 2).

A record that says `failed` for a reason of ours (the terminal reporter's crash once marked
six finished items failed) while its URL job or its media is recorded must be followed, not
created again, and `status` must end up saying what VOD says.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("clikit")
from clikit import Workspace, mp4  # noqa: E402

from vodsync.state.store import RecordStatus, StateStore  # noqa: E402

pytest_plugins = ["clikit"]  # the `ws` fixture

CRASH = "unexpected error: AttributeError: 'RichReporter' object has no attribute 'outcome'"


def _mark_failed(ws: Workspace, *names: str, **fields: object) -> None:
    """What the crashed reporter left: the records say failed, everything else as recorded."""
    with StateStore.open(ws.state) as store:
        for name in names:
            rec = store.get(name)
            assert rec is not None
            store.put(rec.replace(status=RecordStatus.FAILED, last_error=CRASH, last_result=f"failed: {CRASH}",
                                  attempts=rec.attempts + 1, **fields))


def test_a_failed_record_with_a_recorded_url_job_is_followed_not_submitted_again(ws: Workspace) -> None:
    ws.manifest([{"name": "trailer", "type": "url", "url": ws.url("/t.mp4", mp4(3000, b"t")), "title": "Trailer"}])
    first = ws.apply()
    assert first.code == 0, first
    [job] = ws.vod()["url_jobs"]
    # As the crash left it: submitted, the job recorded, then `failed` from reporting the outcome.
    _mark_failed(ws, "trailer", job_id=job["JobId"], remote_id=None, remote_status=None)
    assert ws.status()["trailer"]["status"] == "failed"

    plan = ws.cli("plan", "--json")
    assert [c["action"] for c in plan.json()["changes"]] == ["follow"], plan
    again = ws.apply()
    assert again.code == 0, again
    assert ws.calls()["UploadMediaByURL"] == 1
    assert len(ws.vod()["videos"]) == 1
    assert ws.status()["trailer"]["status"] == "ready"


def test_complete_media_recorded_as_failed_ends_up_ready_without_a_new_create(ws: Workspace) -> None:
    media = ws.five_kinds()
    ws.manifest(media)
    first = ws.apply()
    assert first.code == 0, first
    names = [m["name"] for m in media]
    before = ws.calls()
    _mark_failed(ws, *names)

    again = ws.apply()
    assert again.code == 0, again
    assert {name: row["status"] for name, row in ws.status().items()} == dict.fromkeys(names, "ready")
    created = {k: v for k, v in ws.writes(before).items() if k.startswith(("Create", "Upload", "Register"))}
    assert created == {}, created
    vod = ws.vod()
    assert (len(vod["videos"]), len(vod["images"]), len(vod["attached"])) == (3, 1, 1)
    assert ws.cli("plan", "--detailed-exitcode").code == 0  # converged: nothing left to do
