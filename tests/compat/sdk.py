"""kms-go's `kes` package (v0.3.1, the client current MinIO uses) against the newest
KES and against keyhost, both from the same newest-schema configuration: every method
of `kes.Client` (sdk/sdk.go), compared call by call."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness import Pki, Probe, Report, say


def _transcript(binary: Path, url: str, creds: dict) -> dict[str, dict]:
    out = subprocess.run(
        [str(binary), url, str(creds["root"].cert), str(creds["root"].key), str(creds["app"].cert), str(creds["app"].key)],
        capture_output=True, text=True, timeout=120,
    )
    calls: dict[str, dict] = {}
    for line in out.stdout.splitlines():
        entry = json.loads(line)
        name = entry.pop("call")
        n = 1
        while f"{name}#{n}" in calls:
            n += 1
        calls[f"{name}#{n}"] = entry
    if out.returncode != 0:
        calls["exit"] = {"code": out.returncode, "stderr": out.stderr[-2000:]}
    return calls


def phase(args, report: Report, probe: Probe, base: Path) -> None:
    from run import make_creds, start_newest

    work = base / "sdk"
    work.mkdir()
    pki = Pki(work / "pki")
    creds = make_creds(pki)
    ref = start_newest(args.kes_newest, "sdk.kes", pki, creds, "off", work, False)
    ours = start_newest(args.keyhost, "sdk.keyhost", pki, creds, "off", work, True)
    try:
        ref.wait_ready(probe, creds["root"])
        ours.wait_ready(probe, creds["root"])
        a = _transcript(args.sdk, ref.url, creds)
        b = _transcript(args.sdk, ours.url, creds)
    finally:
        ref.stop()
        ours.stop()
    for call in sorted(set(a) | set(b)):
        report.compare("SDK call", f"sdk.{call}", a.get(call) or {}, b.get(call) or {})
    say(f"  sdk: {len(set(a) | set(b))} kms-go kes.Client calls compared")
