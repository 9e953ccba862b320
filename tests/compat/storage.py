"""Storage both ways: a fleet moves from KES to keyhost and back with no re-keying.

For each keystore (an fs directory; AWS Secrets Manager on moto) and each direction,
one server writes keys (created and imported) and ciphertexts (data keys with and
without a context, encrypted plaintexts), stops, and the other server, started on the
same keystore, must list every key, decrypt every ciphertext to the same plaintext,
and make ciphertexts the first server then decrypts in turn:

  * KES v0.16.1 -> keyhost (v0.16 configuration) -> KES v0.16.1
  * keyhost (v0.16 configuration) -> KES v0.16.1 -> keyhost
  * keyhost (newest configuration, compat.key_format: v0.16, compat.ciphertext: json)
    -> KES v0.16.1
  * newest KES -> keyhost (newest configuration) -> newest KES, and the reverse
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

from harness import Cred, Pki, Probe, Report, Server, free_port, say

B64 = lambda b: base64.b64encode(b).decode()  # noqa: E731


def _call(probe: Probe, server: Server, cred: Cred, method: str, path: str, body=None) -> dict:
    r = probe.send(url=server.url, method=method, path=path, cert=str(cred.cert), key=str(cred.key), proto="h1",
                   body=None if body is None else B64(json.dumps(body).encode()))
    try:
        r["json"] = json.loads(r["body"])
    except ValueError:
        r["json"] = None
    return r


def write(probe: Probe, server: Server, cred: Cred, tag: str, era: str) -> list[dict]:
    """Keys and ciphertexts made by `server`; what each must decrypt to."""
    items = []
    for name in (f"{tag}-made", f"{tag}-imported"):
        if name.endswith("imported"):
            body = {"bytes": B64(os.urandom(32))} if era == "v016" else {"key": B64(os.urandom(32)), "cipher": "AES256"}
            r = _call(probe, server, cred, "POST", f"/v1/key/import/{name}", body)
        else:
            r = _call(probe, server, cred, "POST", f"/v1/key/create/{name}")
        assert r["status"] == 200, (server.label, name, r)
        for context in (None, b"bucket/object"):
            body = {} if context is None else {"context": B64(context)}
            dek = _call(probe, server, cred, "POST", f"/v1/key/generate/{name}", body)["json"]
            items.append({"key": name, "ciphertext": dek["ciphertext"], "context": context, "plaintext": dek["plaintext"]})
        plaintext = B64(f"written by {server.label}".encode())
        ct = _call(probe, server, cred, "POST", f"/v1/key/encrypt/{name}", {"plaintext": plaintext})["json"]
        items.append({"key": name, "ciphertext": ct["ciphertext"], "context": None, "plaintext": plaintext})
    return items


def read(report: Report, probe: Probe, server: Server, cred: Cred, items: list[dict], case: str, era: str) -> None:
    if era == "v016":
        listing = _call(probe, server, cred, "GET", "/v1/key/list/*")
        names = {json.loads(line)["Name"] for line in listing["body"].decode().splitlines() if line}
    else:
        names = set(_call(probe, server, cred, "GET", "/v1/key/list/")["json"]["names"])
    wanted = {i["key"] for i in items}
    report.compare("storage check", f"{case}.list", {"keys": sorted(wanted)}, {"keys": sorted(wanted & names)})
    for n, item in enumerate(items):
        body = {"ciphertext": item["ciphertext"]}
        if item["context"] is not None:
            body["context"] = B64(item["context"])
        r = _call(probe, server, cred, "POST", f"/v1/key/decrypt/{item['key']}", body)
        got = (r["json"] or {}).get("plaintext", f"{r['status']} {r['body'][:200]!r}")
        report.compare("storage check", f"{case}.decrypt.{item['key']}.{n}", {"plaintext": item["plaintext"]}, {"plaintext": got})


def _round_trip(report, probe, start_a, start_b, label, cred, era_a, era_b, era_read):
    """A writes, B reads and writes, A reads what B wrote."""
    a = start_a(f"{label}.1")
    a.wait_ready(probe, cred)
    first = write(probe, a, cred, "first", era_a)
    a.stop()
    b = start_b(f"{label}.2")
    b.wait_ready(probe, cred)
    read(report, probe, b, cred, first, f"storage.{label}.{b.label.split('.')[-1]}-reads", era_b)
    second = write(probe, b, cred, "second", era_b)
    b.stop()
    a = start_a(f"{label}.3")
    a.wait_ready(probe, cred)
    read(report, probe, a, cred, second, f"storage.{label}.back", era_read)
    a.stop()


def phase(args, report: Report, probe: Probe, base: Path) -> None:
    import wire
    from run import make_creds

    work = base / "storage"
    work.mkdir()
    pki = Pki(work / "pki")
    creds = make_creds(pki)
    root = creds["root"]
    moto = None
    keystores = {"fs": lambda d: f"keystore:\n  fs:\n    path: {d / 'keys'}\n"}
    moto_bin = args.moto
    if moto_bin and moto_bin.exists():
        port = free_port()
        moto = subprocess.Popen([str(moto_bin), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        # One namespace of secrets per direction: each run gets its own region.
        regions = iter(["us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1"])

        def aws(d: Path) -> str:
            region = (d / "region").read_text() if (d / "region").exists() else None
            if region is None:
                region = next(regions)
                (d / "region").write_text(region)
            return (f"keystore:\n  aws:\n    secretsmanager:\n      endpoint: http://127.0.0.1:{port}\n"
                    f"      region: {region}\n      credentials:\n        accesskey: test\n        secretkey: test\n")

        keystores["aws"] = aws
    else:
        report.not_run.append("storage (AWS Secrets Manager): no moto_server (--moto)")
    try:
        for store, section in keystores.items():
            count = [0]

            def server(binary: Path, d: Path, label: str, era: str, keyhost: bool, compat: str = "", section=section) -> Server:
                count[0] += 1
                sd = d / f"{label}-{count[0]}"
                sd.mkdir()
                port = free_port()
                if era == "v016":
                    text = wire.v016_config(creds, pki, port, d / "keys")
                else:
                    text = wire.newest_config(creds, pki, port, d / "keys", "off")
                head = text[: text.index("keystore:")]
                (sd / "config.yml").write_text(head + section(d) + compat)
                argv = [str(binary), "server", "--config", "config.yml"]
                if era == "v016":
                    argv.append("--auth=off")
                if keyhost:
                    argv.append("--no-mlock")
                return Server(label, argv, sd, port, env={"AWS_EC2_METADATA_DISABLED": "true"})

            k16, kn, kh = args.kes_v016, args.kes_newest, args.keyhost
            runs = [("v016-kes-first", k16, "v016", False, kh, "v016", True),
                    ("v016-keyhost-first", kh, "v016", True, k16, "v016", False)]
            if kn:
                runs += [("newest-kes-first", kn, "newest", False, kh, "newest", True),
                         ("newest-keyhost-first", kh, "newest", True, kn, "newest", False)]
            for label, bin_a, era_a, a_ours, bin_b, era_b, b_ours in runs:
                d = work / f"{store}-{label}"
                d.mkdir()
                wa = "keyhost" if a_ours else "kes"
                wb = "keyhost" if b_ours else "kes"
                _round_trip(report, probe,
                            lambda l, d=d, b=bin_a, e=era_a, o=a_ours, w=wa: server(b, d, f"{l}.{w}", e, o),
                            lambda l, d=d, b=bin_b, e=era_b, o=b_ours, w=wb: server(b, d, f"{l}.{w}", e, o),
                            f"{store}.{label}", root, era_a, era_b, era_a)
            # keyhost with a newest file and the compat switches writes what KES v0.16.1 reads.
            d = work / f"{store}-newest-compat"
            d.mkdir()
            compat = "compat:\n  key_format: v0.16\n  ciphertext: json\n"
            a = server(kh, d, "newest-compat.keyhost", "newest", True, compat)
            a.wait_ready(probe, root)
            items = write(probe, a, root, "compat", "newest")
            a.stop()
            b = server(k16, d, "newest-compat.kes", "v016", False)
            b.wait_ready(probe, root)
            read(report, probe, b, root, items, f"storage.{store}.newest-compat.kes-reads", "v016")
            b.stop()
            say(f"  storage {store}: {len(runs)} round trips and the compat switches checked")
    finally:
        if moto:
            moto.terminate()
            moto.wait()
