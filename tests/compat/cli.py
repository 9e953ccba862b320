"""The real `kes` v0.16.1 CLI against KES v0.16.1 and against keyhost (both from the
same v0.16 configuration file): every command of `kes --help` and its subcommands,
with their error cases. Exit code, standard output and standard error must agree
after masking (random keys and ciphertexts, ports, times; listings as sets).
"""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness import Cred, Pki, Probe, Report, say

B64_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # bytes 0..31


@dataclass
class Cmd:
    id: str
    argv: list
    who: str = "root"
    stdin: str | None = None
    # Saved from this server's stdout (JSON) for later commands: name -> field.
    save: dict = field(default_factory=dict)
    # Compare stdout lines as a set.
    unordered: bool = False
    timeout: float | None = None
    # Against no server at all (the CLI's own commands).
    offline: bool = False


def commands(creds: dict[str, Cred], work: Path) -> list[Cmd]:
    policy = work / "policy.json"
    policy.write_text('{"allow":["/v1/key/generate/o-*","/v1/status"],"deny":[]}')
    bad_policy = work / "bad-policy.json"
    bad_policy.write_text('{"allow":["/v1/key/["]}')
    fresh = creds["fresh"].identity
    root = creds["root"].identity
    c: list[Cmd] = []
    add = lambda *a, **k: c.append(Cmd(*a, **k))  # noqa: E731
    # Help and usage errors.
    for argv in (["--help"], ["key", "--help"], ["policy", "--help"], ["identity", "--help"], ["log", "--help"],
                 ["tool", "--help"], ["key", "create", "--help"], ["key", "list", "--help"], ["key", "derive", "--help"],
                 ["key", "decrypt", "--help"], ["key", "delete", "--help"], ["policy", "add", "--help"],
                 ["identity", "assign", "--help"], ["log", "trace", "--help"], ["tool", "identity", "--help"],
                 ["frobnicate"], ["key"], ["key", "create"], ["key", "frobnicate"], ["key", "create", "-k", "a", "b", "c"],
                 ["--version"]):
        add("help." + "-".join(a.strip("-") for a in argv), argv, offline=True)
    # Keys.
    add("key.create", ["key", "create", "-k", "k1"])
    add("key.create.again", ["key", "create", "-k", "k1"])
    add("key.create.dotted", ["key", "create", "-k", "my.key"])
    add("key.create.import", ["key", "create", "-k", "imp", B64_KEY])
    add("key.create.import.again", ["key", "create", "-k", "imp", B64_KEY])
    add("key.create.import.short", ["key", "create", "-k", "imp2", "AAAA"])
    add("key.create.import.not-base64", ["key", "create", "-k", "imp2", "***"])
    add("key.create.app", ["key", "create", "-k", "app-1"], who="app")
    add("key.create.app.denied", ["key", "create", "-k", "k9"], who="app")
    add("key.create.nobody", ["key", "create", "-k", "app-2"], who="nobody")
    add("key.derive", ["key", "derive", "-k", "k1"], save={"dek": "ciphertext"})
    add("key.derive.context", ["key", "derive", "-k", "k1", "Y3R4"], save={"dekc": "ciphertext"})
    add("key.derive.bad-context", ["key", "derive", "-k", "k1", "***"])
    add("key.derive.missing", ["key", "derive", "-k", "never"])
    add("key.derive.imported", ["key", "derive", "-k", "imp"], save={"dek_imp": "ciphertext"})
    add("key.derive.app.denied", ["key", "derive", "-k", "k1"], who="app")
    add("key.decrypt", ["key", "decrypt", "-k", "k1", "{dek}"])
    add("key.decrypt.context", ["key", "decrypt", "-k", "k1", "{dekc}", "Y3R4"])
    add("key.decrypt.wrong-context", ["key", "decrypt", "-k", "k1", "{dekc}", "b3RoZXI="])
    add("key.decrypt.imported", ["key", "decrypt", "-k", "imp", "{dek_imp}"])
    add("key.decrypt.other-key", ["key", "decrypt", "-k", "imp", "{dek}"])
    add("key.decrypt.not-a-ciphertext", ["key", "decrypt", "-k", "k1", "bm90LWEtY2lwaGVydGV4dA=="])
    add("key.decrypt.not-base64", ["key", "decrypt", "-k", "k1", "***"])
    add("key.decrypt.missing", ["key", "decrypt", "-k", "never", "{dek}"])
    add("key.decrypt.no-args", ["key", "decrypt", "-k", "k1"])
    add("key.list", ["key", "list", "-k"], unordered=True)
    add("key.list.pattern", ["key", "list", "-k", "k*"], unordered=True)
    add("key.list.none", ["key", "list", "-k", "zz*"], unordered=True)
    add("key.list.bad-glob", ["key", "list", "-k", "["], unordered=True)
    add("key.list.app", ["key", "list", "-k"], who="app", unordered=True)
    add("key.list.nobody", ["key", "list", "-k"], who="nobody")
    add("key.delete", ["key", "delete", "-k", "k1"])
    add("key.delete.again", ["key", "delete", "-k", "k1"])
    add("key.delete.app.denied", ["key", "delete", "-k", "imp"], who="app")
    add("key.list.after", ["key", "list", "-k"], unordered=True)
    # Policies (v0.16.1's `policy add` stores under the name "add": its bug, on both).
    add("policy.add", ["policy", "add", "-k", "o-p1", str(policy)])
    add("policy.add.stdin", ["policy", "add", "-k", "o-p2"], stdin='{"allow":["/v1/status"]}')
    add("policy.add.bad-glob", ["policy", "add", "-k", "o-p3", str(bad_policy)])
    add("policy.add.missing-file", ["policy", "add", "-k", "o-p3", str(work / "none.json")])
    add("policy.add.app.denied", ["policy", "add", "-k", "o-p4", str(policy)], who="app")
    add("policy.list", ["policy", "list", "-k"], unordered=True)
    add("policy.list.pattern", ["policy", "list", "-k", "my*"], unordered=True)
    add("policy.show", ["policy", "show", "-k", "my-app"])
    add("policy.show.add", ["policy", "show", "-k", "add"])
    add("policy.show.missing", ["policy", "show", "-k", "none"])
    add("policy.show.app", ["policy", "show", "-k", "my-app"], who="app")
    # Identities.
    add("identity.assign", ["identity", "assign", "-k", fresh, "add"])
    add("identity.assign.root", ["identity", "assign", "-k", root, "add"])
    add("identity.assign.missing-policy", ["identity", "assign", "-k", fresh, "none"])
    add("identity.assign.app.denied", ["identity", "assign", "-k", fresh, "add"], who="app")
    add("identity.list", ["identity", "list", "-k"], unordered=True)
    add("identity.list.pattern", ["identity", "list", "-k", fresh[:5] + "*"], unordered=True)
    add("identity.forget", ["identity", "forget", "-k", fresh])
    add("identity.forget.root", ["identity", "forget", "-k", root])
    add("identity.list.after", ["identity", "list", "-k"], unordered=True)
    add("policy.delete", ["policy", "delete", "-k", "add"])
    add("policy.delete.missing", ["policy", "delete", "-k", "add"])
    add("policy.list.after", ["policy", "list", "-k"], unordered=True)
    # Logs: a stream, cut after a second (exit 124 from timeout(1)).
    add("log.trace.json", ["log", "trace", "-k", "--json"], timeout=1.5)
    add("log.trace.error.json", ["log", "trace", "-k", "--json", "--type", "error"], timeout=1.5)
    # One sample: the first comes at once, the next after --rate.
    add("log.trace.metric", ["log", "trace", "-k", "--type", "metric", "--rate", "5s"], timeout=1.5)
    add("log.trace.app.denied", ["log", "trace", "-k", "--json"], who="nobody", timeout=1.5)
    # Tools (no server).
    add("tool.identity.of", ["tool", "identity", "of", str(creds["app"].cert)], offline=True)
    add("tool.identity.of.sha512", ["tool", "identity", "of", "--hash", "SHA-512", str(creds["app"].cert)], offline=True)
    add("tool.identity.of.missing", ["tool", "identity", "of", str(work / "none.cert")], offline=True)
    return c


_MASKS = [
    # Latencies are the servers' own.
    (re.compile(r'"kes_http_response_time":\{[^}]*\}'), '"kes_http_response_time":<histogram>'),
    (re.compile(r'"kes_system_up_time":\d+'), '"kes_system_up_time":<n>'),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"[A-Za-z0-9+/]{40,}={0,2}"), "<base64>"),
    (re.compile(r'"time":"[^"]*"'), '"time":"<time>"'),
    (re.compile(r'"time":\d+'), '"time":<n>'),
    (re.compile(r"\d+(\.\d+)?(ns|µs|ms|s)\b"), "<duration>"),
]


def _mask(text: str, unordered: bool) -> object:
    for rx, sub in _MASKS:
        # Identities (64 hex digits) are the same on both sides and stay.
        text = rx.sub(lambda m: m.group(0) if re.fullmatch(r"[0-9a-f]{64}", m.group(0)) else sub, text)
    if unordered:
        return sorted(text.splitlines())
    return text


def _run(kes: Path, cmd: Cmd, url: str, cred: Cred, saved: dict, cwd: Path) -> dict:
    argv = [a.format(**saved) if "{" in a else a for a in cmd.argv]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "KES_SERVER": url,
           "KES_CLIENT_CERT": str(cred.cert), "KES_CLIENT_KEY": str(cred.key)}
    prefix = ["timeout", "--signal=INT", str(cmd.timeout)] if cmd.timeout else []
    out = subprocess.run(prefix + [str(kes)] + argv, input=cmd.stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    for var, fld in cmd.save.items():
        try:
            saved[var] = json.loads(out.stdout)[fld]
        except (ValueError, KeyError, TypeError):
            saved[var] = "none"
    return {"exit": out.returncode, "stdout": _mask(out.stdout, cmd.unordered), "stderr": _mask(out.stderr, False)}


def phase(args, report: Report, probe: Probe, base: Path) -> None:
    from run import make_creds, start_v016

    work = base / "cli"
    work.mkdir()
    pki = Pki(work / "pki")
    creds = make_creds(pki)
    cmds = commands(creds, work)
    ref = start_v016(args.kes_v016, "cli.kes", pki, creds, "off", work, False)
    ours = start_v016(args.keyhost, "cli.keyhost", pki, creds, "off", work, True)
    try:
        ref.wait_ready(probe, creds["root"])
        ours.wait_ready(probe, creds["root"])
        saved = {ref.label: {}, ours.label: {}}
        for cmd in cmds:
            def on(server, cmd=cmd):
                return _run(args.kes_v016, cmd, server.url, creds[cmd.who], saved[server.label], work)

            if cmd.timeout:
                # Streams cut after a fixed time: both at once (they write no files).
                with ThreadPoolExecutor(max_workers=2) as pool:
                    results = list(pool.map(on, (ref, ours)))
            else:
                results = [on(ref), on(ours)]
            report.compare("CLI command", f"cli.{cmd.id}", results[0], results[1])
    finally:
        ref.stop()
        ours.stop()
    say(f"  cli: {len(cmds)} kes v0.16.1 commands compared")
