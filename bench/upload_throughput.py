"""Upload throughput: `vodsync apply` of a batch against the emulator, with two baselines.

    python bench/upload_throughput.py [--quick] [--concurrency 4]

Default batch: 8 files of 128 MiB and 1 file of 1 GiB (2 GiB); --quick: 4 x 32 MiB + 256 MiB.
Every contender is timed the same way: as a whole process, from fork to exit (interpreter
start-up, imports, one CreateUploadVideo per file, the upload), against the same emulator
process (reset in between), whose data lives in memory when /dev/shm has room (see
`_common.service_dir`: the service's storage is not the client machine's cost) and whose
ETags come from the CRC-64 it computes anyway instead of an MD5 of every byte (`--etags
crc64`; the MD5 was two thirds of its CPU, which the real service spends on its own
machines; `--md5-etags` puts it back):

- emulator sink: the emulator's own intake, measured with a client that costs almost
  nothing (multipart uploads of 32 MiB parts sent as presigned-URL PUTs with sendfile,
  on concurrency x threads connections; in-process);
- vodsync: `vodsync apply --yes --wait 0` (planning, content identity and the state file
  included);
- (a) the official upload SDK's method: per file CreateUploadVideo, then oss2
  InitiateMultipartUpload, 10 MiB parts sent one after another, Complete; files one
  after another;
- (b) raw `oss2.resumable_upload` with vodsync's concurrency (files at once x part
  threads per file); a few settings are tried and the best is the baseline.

vodsync and the (b) settings run in `--rounds` interleaved rounds, each (b) setting right
after vodsync, so a slow moment of a shared machine lands on both sides of a comparison.
Verdicts use medians: vodsync's median time against (a), and the median over rounds of
vodsync's time / (b)'s time in the same round, against the (b) setting with the lowest
median. (Best-of-N would compare vodsync's best of N with the best of 5 x N raw runs.)

Targets: vodsync >= 3x (a); vodsync within 10% of (b).

On loopback every run is bound by CPU (client and emulator share the machine's cores),
which is where one stream of 10 MiB parts loses least. `--latency-ms 30` delays every
OSS request at the emulator (its `slow` fault rule), as a round trip to OSS does: what
the SDK method pays once per part and vodsync overlaps. `--stream-mib-s 20` also caps
each request body's rate, as one TCP stream over a WAN is capped (window / round trip):
the regime in which a real upload runs, and where parallel parts pay off.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    EmulatorProcess,
    GiB,
    MiB,
    make_file,
    mbps,
    print_machine,
    require_disk,
    run_process,
    sdk_client,
    service_dir,
    verdict,
    vodsync_cmd,
    workdir,
    write_yaml,
)


def _create_upload_video(client, title: str, path: Path) -> tuple[dict, dict]:  # noqa: ANN001
    from aliyunsdkvod.request.v20170321.CreateUploadVideoRequest import CreateUploadVideoRequest

    req = CreateUploadVideoRequest()
    req.set_Title(title)
    req.set_FileName(path.name)
    req.set_FileSize(path.stat().st_size)
    req.set_protocol_type("http")
    answer = json.loads(client.do_action_with_exception(req))
    address = json.loads(base64.b64decode(answer["UploadAddress"]))
    auth = json.loads(base64.b64decode(answer["UploadAuth"]))
    return address, auth


def _bucket(address: dict, auth: dict, enable_crc: bool = True):  # noqa: ANN202
    import oss2

    sts = oss2.StsAuth(auth["AccessKeyId"], auth["AccessKeySecret"], auth["SecurityToken"], auth_version="v4")
    session = oss2.Session(pool_size=32)
    session.session.trust_env = False
    return oss2.Bucket(sts, address["Endpoint"], address["Bucket"], session=session, enable_crc=enable_crc,
                       region=auth["Region"])


def sdk_method(url: str, files: list[Path], *, part_size: int = 10 * MiB) -> None:
    """What the official VOD upload SDK does: CreateUploadVideo, then parts one after another."""
    import oss2
    from oss2.models import PartInfo

    client = sdk_client(url)
    for path in files:
        address, auth = _create_upload_video(client, path.stem, path)
        bucket = _bucket(address, auth)
        key = address["FileName"]
        size = path.stat().st_size
        upload_id = bucket.init_multipart_upload(key).upload_id
        parts = []
        with open(path, "rb") as f:
            number, offset = 1, 0
            while offset < size:
                n = min(part_size, size - offset)
                f.seek(offset)
                result = bucket.upload_part(key, upload_id, number, oss2.utils.SizedFileAdapter(f, n))
                parts.append(PartInfo(number, result.etag, size=n, part_crc=result.crc))
                offset += n
                number += 1
        bucket.complete_multipart_upload(key, upload_id, parts)


def raw_oss2(url: str, files: list[Path], *, concurrency: int, threads: int, part_size: int,
             checkpoints: Path, largest_first: bool = False, enable_crc: bool = True) -> None:
    """oss2.resumable_upload, `concurrency` files at once, `threads` parts each (a ticket per file first)."""
    import oss2

    client = sdk_client(url)
    if largest_first:
        files = sorted(files, key=lambda p: -p.stat().st_size)
    store = oss2.ResumableStore(root=str(checkpoints))

    def one(path: Path) -> None:
        address, auth = _create_upload_video(client, path.stem, path)
        oss2.resumable_upload(_bucket(address, auth, enable_crc), address["FileName"], str(path), store=store,
                              multipart_threshold=16 * MiB, part_size=part_size, num_threads=threads)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, files))


def contender_main(argv: list[str]) -> int:
    """`--contender sdk|raw`: run one baseline in this process (the parent times the process)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--contender", choices=["sdk", "raw"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--media", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--part-size", type=int, default=8 * MiB)
    parser.add_argument("--largest-first", action="store_true")
    parser.add_argument("--no-crc", action="store_true")
    args = parser.parse_args(argv)
    files = sorted(args.media.glob("*.mp4"))
    if args.contender == "sdk":
        sdk_method(args.url, files, part_size=args.part_size)
    else:
        raw_oss2(args.url, files, concurrency=args.concurrency, threads=args.threads, part_size=args.part_size,
                 checkpoints=args.checkpoints, largest_first=args.largest_first, enable_crc=not args.no_crc)
    return 0


def emulator_sink(emu: EmulatorProcess, files: list[Path], streams: int, part_size: int = 32 * MiB) -> float:
    """The emulator's own intake: every file as a multipart upload whose parts are presigned-URL
    PUTs sent with sendfile on `streams` connections at once, so the client costs almost nothing."""
    import oss2
    from oss2.models import PartInfo

    bucket_name = "bench-sink"
    account = oss2.Bucket(oss2.Auth(ACCESS_KEY_ID, ACCESS_KEY_SECRET), emu.url, bucket_name)
    account.session.session.trust_env = False
    account.create_bucket()
    uploads = []  # (key, upload id, [(path, part number, offset, size)])
    for i, path in enumerate(sorted(files, key=lambda p: -p.stat().st_size)):
        key = f"sink/{i}/{path.name}"
        upload_id = account.init_multipart_upload(key).upload_id
        size = path.stat().st_size
        parts = [(path, n, offset, min(part_size, size - offset))
                 for n, offset in enumerate(range(0, size, part_size), 1)]
        uploads.append((key, upload_id, parts))

    def put(job: tuple[str, str, Path, int, int, int]) -> PartInfo:
        key, upload_id, path, number, offset, size = job
        signed = urlsplit(account.sign_url("PUT", key, 3600, params={"partNumber": str(number),
                                                                    "uploadId": upload_id}))
        conn = http.client.HTTPConnection(signed.hostname, signed.port, timeout=300)
        conn.putrequest("PUT", f"{signed.path}?{signed.query}", skip_accept_encoding=True)
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        with open(path, "rb") as f:
            conn.sock.sendfile(f, offset=offset, count=size)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"sink PUT failed: {resp.status} {body[:200]!r}")
        return PartInfo(number, resp.getheader("ETag", "").strip('"'), size=size)

    started = time.perf_counter()
    jobs = [(key, upload_id, *part) for key, upload_id, parts in uploads for part in parts]
    with ThreadPoolExecutor(streams) as pool:
        done = list(pool.map(put, jobs))
    for key, upload_id, _ in uploads:
        mine = [p for (k, u, *_), p in zip(jobs, done, strict=True) if (k, u) == (key, upload_id)]
        account.complete_multipart_upload(key, upload_id, mine)
    return time.perf_counter() - started


def main() -> int:
    if "--contender" in sys.argv:
        return contender_main(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 x 32 MiB + 256 MiB instead of 8 x 128 MiB + 1 GiB")
    parser.add_argument("--concurrency", type=int, default=4, help="files at once (vodsync's default: 4)")
    parser.add_argument("--threads", type=int, default=4, help="part threads per file (vodsync's default: 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of vodsync and each (b) setting")
    parser.add_argument("--skip-sdk", action="store_true", help="skip baseline (a), the slowest run")
    parser.add_argument("--latency-ms", type=int, default=0,
                        help="delay every OSS request this long at the emulator (its 'slow' fault), as a "
                             "round trip to a distant region would; default 0 (loopback)")
    parser.add_argument("--stream-mib-s", type=float, default=0,
                        help="cap every OSS request body at this rate, as one TCP stream over a WAN is "
                             "capped by its window / round trip (e.g. 20); default 0: no cap")
    parser.add_argument("--md5-etags", action="store_true",
                        help="the emulator computes OSS's MD5 ETags (by default its ETags come from the "
                             "CRC-64 it computes anyway: the real service hashes on its own machines)")
    args = parser.parse_args()
    small, count, big = (32 * MiB, 4, 256 * MiB) if args.quick else (128 * MiB, 8, 1 * GiB)
    total = small * count + big
    print_machine()
    print(f"batch: {count} x {small // MiB} MiB + 1 x {big // MiB} MiB = {total / MiB:.0f} MiB; "
          f"concurrency {args.concurrency} files x {args.threads} part threads; {args.rounds} rounds"
          + (f"; every OSS request delayed {args.latency_ms} ms" if args.latency_ms else "")
          + (f"; each stream capped at {args.stream_mib_s:g} MiB/s" if args.stream_mib_s else "")
          + ("" if args.latency_ms or args.stream_mib_s else "; loopback"))
    etags = "md5" if args.md5_etags else "crc64"
    print(f"emulator ETags: {etags}" + ("" if args.md5_etags else " (no MD5 of every byte; --md5-etags for OSS's own)"))

    with workdir("upload") as root:
        require_disk(root, 2 * total)
        media = root / "manifests" / "media"
        files = [make_file(media / f"clip{i:02d}.mp4", small) for i in range(count)]
        files.append(make_file(media / "feature.mp4", big))
        write_yaml(root / "manifests" / "batch.yaml", "media:\n" + "".join(
            f"  - {{name: {p.stem}, type: video, file: media/{p.name}}}\n" for p in files))
        runs: dict[str, list[float]] = {}  # contender -> seconds of each run, in round order

        with service_dir("upload-emulator", 2 * total) as data, EmulatorProcess(data, etags=etags) as emu:
            print(f"emulator data in {data}", flush=True)

            def timed(name: str, fn, link: bool = True) -> None:  # noqa: ANN001
                emu.reset()
                if link and (args.latency_ms or args.stream_mib_s):
                    rule = {"match": "oss:*", "error": "slow", "delay_ms": args.latency_ms}
                    if args.stream_mib_s:
                        rule["bytes_per_second"] = int(args.stream_mib_s * MiB)
                    emu.control("faults", {"rules": [rule]})
                cpu0 = emu.cpu_seconds()
                seconds, client = fn()
                runs.setdefault(name, []).append(seconds)
                print(f"  {name:<46} {seconds:6.2f} s  {mbps(total, seconds):6.1f} MiB/s  "
                      f"CPU: emulator {emu.cpu_seconds() - cpu0:4.1f} s{client}", flush=True)

            def process(cmd: list[str]) -> tuple[float, str]:
                r = run_process(cmd, cwd=root)
                if r.returncode != 0:
                    raise SystemExit(f"{cmd[:4]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}")
                return r.seconds, f", client {r.cpu_seconds:3.1f} s (peak RSS {r.max_rss / MiB:.0f} MiB)"

            def vodsync_run() -> tuple[float, str]:
                state = root / f"state-{time.monotonic_ns()}" / "state.db"
                return process(vodsync_cmd(
                    "apply", "-f", str(root / "manifests"), "--state", str(state), "--endpoint", emu.url,
                    "--yes", "--wait", "0", "--concurrency", str(args.concurrency), "--log-level", "warning",
                ))

            def contender(kind: str, *extra: str) -> tuple[float, str]:
                return process([sys.executable, __file__, "--contender", kind, "--url", emu.url,
                                "--media", str(media), "--checkpoints", str(root / f"ckpt-{time.monotonic_ns()}"),
                                "--concurrency", str(args.concurrency), "--threads", str(args.threads), *extra])

            def sink() -> tuple[float, str]:
                return emulator_sink(emu, files, args.concurrency * args.threads), ""

            raw_settings = {
                "(b) raw resumable_upload, 8 MiB parts": (),
                "(b) raw resumable_upload, 32 MiB parts": ("--part-size", str(32 * MiB)),
                # oss2 without its own per-byte CRC (vodsync checks the whole object's CRC instead)
                "(b) raw resumable_upload, 8 MiB parts, no CRC": ("--no-crc",),
                "(b) raw, 8 MiB parts, no CRC, largest first": ("--no-crc", "--largest-first"),
                "(b) raw resumable_upload, 32 MiB parts, no CRC": ("--part-size", str(32 * MiB), "--no-crc"),
            }
            for round_ in range(args.rounds):
                print(f" round {round_ + 1}")
                timed(SINK, sink, link=False)
                timed(VODSYNC, vodsync_run)
                for name, extra in raw_settings.items():
                    timed(name, lambda extra=extra: contender("raw", *extra))
            if not args.skip_sdk:
                timed(SDK, lambda: contender("sdk", "--part-size", str(10 * MiB)))

    vod = statistics.median(runs[VODSYNC])
    b_name = min((n for n in runs if n.startswith("(b)")), key=lambda n: statistics.median(runs[n]))
    ratios = [v / b for v, b in zip(runs[VODSYNC], runs[b_name], strict=True)]
    sink_s = statistics.median(runs[SINK])
    print()
    print(f"vodsync: median {mbps(total, vod):.1f} MiB/s, best {mbps(total, min(runs[VODSYNC])):.1f} MiB/s; "
          f"emulator sink: median {mbps(total, sink_s):.1f} MiB/s")
    print(f"vodsync / (b) [{b_name[4:]}] in each round: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"best vs best {min(runs[VODSYNC]) / min(runs[b_name]):.2f}")
    if SDK in runs:
        a = runs[SDK][0]
        verdict("vodsync >= 3x the SDK method (a)", a / vod >= 3, f"{a / vod:.2f}x (vodsync's median)")
    ratio = statistics.median(ratios)
    verdict(f"vodsync within 10% of raw oss2 (b) [{b_name[4:]}]", ratio <= 1.10,
            f"vodsync takes {ratio:.2f}x (b)'s time (median of the rounds' ratios)")
    # Were the emulator the bottleneck, vodsync would take about as long as the sink does.
    verdict("the emulator is not the bottleneck (its intake takes < 0.7x vodsync's time)", sink_s < 0.7 * vod,
            f"the sink takes {sink_s / vod:.2f}x vodsync's time (medians)")
    if args.quick:
        print("  (--quick is a smoke run: each run lasts about a second, so every process's fixed costs "
              "(start-up, imports, planning) weigh far more than at the default 2 GiB, which the targets "
              "are set for)")
    return 0


SINK = "emulator sink (sendfile parts, in-process)"
VODSYNC = "vodsync apply"
SDK = "(a) SDK method: 10 MiB parts, one after another"


if __name__ == "__main__":
    sys.exit(main())
