"""KES v0.16.1's own integration tests (`integration_test.go`, built by
../shared/kes-ref/build.sh as kes-integration.test) against keyhost and against
the reference, test by test.

With a v0.16 configuration every test must pass on both. With a newest-schema
configuration (newest KES as the reference) the tests run too: each must fare on
keyhost as it fares on the newest KES (some use v0.16-only routes or shapes and fail
on both).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from harness import Cred, Pki, Probe, Report, Server, free_port, identity_of, say

from cryptography import x509


def _results(binary: Path, server: Server, cred: Cred) -> tuple[dict[str, str], str]:
    out = subprocess.run(
        [str(binary), "-test.v", "-test.count=1", "-integration", "-endpoint", server.url,
         "-cert", str(cred.cert), "-key", str(cred.key), "-k"],
        cwd=cred.cert.parent, capture_output=True, text=True, timeout=300,
    )
    results = {m.group(2): m.group(1) for m in re.finditer(r"^--- (PASS|FAIL|SKIP): (\w+)", out.stdout, re.M)}
    return results, out.stdout + out.stderr


def phase(args, report: Report, probe: Probe, base: Path) -> None:
    from run import start_newest, start_v016

    work = base / "integration"
    work.mkdir()
    pki = Pki(work / "pki")
    # The tests' own client identity (root.cert next to the test binary).
    ref_dir = args.kes_integration.parent
    root_cert = ref_dir / "root.cert"
    root = Cred("root", root_cert, ref_dir / "root.key",
                identity_of(x509.load_pem_x509_certificate(root_cert.read_bytes())))
    creds = {n: pki.client(n) for n in ("app", "ops", "fresh", "nobody")}
    creds["root"] = root
    eras = [("v016", args.kes_v016, start_v016)]
    if args.kes_newest:
        eras.append(("newest", args.kes_newest, start_newest))
    for era, ref_bin, start in eras:
        if not ref_bin:
            continue
        outcome = {}
        for who, binary in (("kes", ref_bin), ("keyhost", args.keyhost)):
            server = start(binary, f"{era}.{who}", pki, creds, "off", work, who == "keyhost")
            try:
                server.wait_ready(probe, creds["app"])
                outcome[who] = _results(args.kes_integration, server, root)
            finally:
                server.stop()
        (ref, ref_log), (ours, our_log) = outcome["kes"], outcome["keyhost"]
        for test in sorted(set(ref) | set(ours)):
            report.compare("integration test", f"integration.{era}.{test}", {"result": ref.get(test)}, {"result": ours.get(test)})
        passed = sum(1 for r in ours.values() if r == "PASS")
        say(f"  integration {era}: keyhost passes {passed}/{len(ours)}, KES {sum(1 for r in ref.values() if r == 'PASS')}/{len(ref)}")
        if era == "v016" and (passed != len(ours) or not ours):
            report.unexplained.append(f"integration.v016: not every test passes on keyhost:\n{our_log[-4000:]}")
        if ours != ref:
            say(our_log[-3000:])
