"""keyhost side by side with the real KES of both eras.

    run.py --keyhost BIN --probe BIN [--kes-v016 BIN] [--kes-newest BIN] [--only PHASE,...]

Phases: wire (differential requests), cli (the kes v0.16.1 CLI), sdk (kms-go's kes
client), integration (KES v0.16.1's own integration tests), storage (keys and ciphertexts
both ways). A phase whose reference is missing is reported as NOT RUN, loudly; the exit
status is 0 only when every phase that ran found no unexplained difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness import Differences, Pki, Report, Server, free_port, in_parallel, say

PHASES = ("wire", "cli", "sdk", "integration", "storage")


def make_creds(pki: Pki) -> dict:
    creds = {n: pki.client(n) for n in ("root", "app", "ops", "fresh", "nobody", "proxy")}
    # A client behind the v0.16 configuration's TLS proxy, whose certificate passes
    # KES v0.16's check of forwarded certificates under --auth on.
    creds["proxied"] = pki.client("proxied", server_usage=True)
    return creds


def start_v016(binary: Path, label: str, pki: Pki, creds: dict, auth: str, base: Path, keyhost: bool) -> Server:
    import wire

    work = base / label
    work.mkdir(parents=True)
    port = free_port()
    (work / "config.yml").write_text(wire.v016_config(creds, pki, port, work / "keys"))
    argv = [str(binary), "server", "--config", "config.yml", f"--auth={auth}"]
    if keyhost:
        argv.append("--no-mlock")
    # KES v0.16 verifies client certificates (--auth=on) against the system roots.
    return Server(label, argv, work, port, env={"SSL_CERT_FILE": str(pki.ca_file)})


def start_newest(binary: Path, label: str, pki: Pki, creds: dict, auth: str, base: Path, keyhost: bool) -> Server:
    import wire

    work = base / label
    work.mkdir(parents=True)
    port = free_port()
    (work / "config.yml").write_text(wire.newest_config(creds, pki, port, work / "keys", auth))
    argv = [str(binary), "server", "--config", "config.yml"]
    if keyhost:
        argv.append("--no-mlock")
    return Server(label, argv, work, port)


def phase_wire(args, report: Report, probe: Probe, base: Path) -> None:
    import wire

    eras = []
    if args.kes_v016:
        eras.append(("v016", args.kes_v016, start_v016, wire.v016_cases))
    if args.kes_newest:
        eras.append(("newest", args.kes_newest, start_newest, wire.newest_cases))
    parts = []
    for era, ref_bin, start, cases_of in eras:
        pki = Pki(base / era / "pki")
        creds = make_creds(pki)
        creds["selfsigned"] = pki.client("selfsigned", self_signed=True)
        cases = cases_of(creds)
        for auth in ("off", "on"):
            for proto in ("h1", "h2"):
                label = f"{era}.auth-{auth}.{proto}"
                parts.append(lambda probe, a=(ref_bin, start, pki, creds, cases, auth, proto, label, era):
                             wire_part(args, report, probe, base, *a))
    # Each part has its own pair of servers; they run side by side.
    in_parallel(parts, args.probe, workers=2)


def wire_part(args, report: Report, probe, base: Path, ref_bin, start, pki, creds, cases, auth, proto, label, era) -> None:
    import wire

    ref = start(ref_bin, f"{label}.kes", pki, creds, auth, base / era, False)
    ours = start(args.keyhost, f"{label}.keyhost", pki, creds, auth, base / era, True)
    try:
        ref.wait_ready(probe, creds["root"])
        ours.wait_ready(probe, creds["root"])
        wire.run_sequence(report, probe, wire.Pair(ref, ours), creds, cases, label, proto)
        # A certificate no configured CA signed: refused at the handshake with
        # verification on, served (as an unknown identity) without.
        extra = [wire.Case("selfsigned.version", "selfsigned", "GET", "/version"),
                 wire.Case("selfsigned.status", "selfsigned", "GET", "/v1/status")]
        wire.run_sequence(report, probe, wire.Pair(ref, ours), creds, extra, label, proto)
        say(f"  wire {label}: {len(cases) + len(extra)} requests compared")
    finally:
        ref.stop()
        ours.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keyhost", type=Path, required=True)
    ap.add_argument("--probe", type=Path, required=True)
    ap.add_argument("--kes-v016", type=Path)
    ap.add_argument("--kes-newest", type=Path)
    ap.add_argument("--kes-integration", type=Path, help="KES v0.16.1's integration test binary")
    ap.add_argument("--sdk", type=Path, help="the kms-go client program (sdk/sdk.go, built)")
    ap.add_argument("--moto", type=Path, help="moto_server, for the AWS storage checks")
    ap.add_argument("--only", default=",".join(PHASES))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    only = args.only.split(",")
    differences = Differences()
    report = Report(differences)
    not_run: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="keyhost-compat-"))
    started = time.monotonic()
    # The phases are independent (each starts its own servers): they run side by
    # side, each with an HTTP probe of its own.
    phases = []
    try:
        if "wire" in only:
            if not (args.kes_v016 or args.kes_newest):
                not_run.append("wire: no reference KES binary")
            else:
                if not args.kes_v016:
                    not_run.append("wire (v0.16 era): no KES v0.16.1 binary")
                if not args.kes_newest:
                    not_run.append("wire (newest era): no newest KES binary")
                phases.append(lambda probe: phase_wire(args, report, probe, base))
        if "cli" in only:
            if args.kes_v016:
                import cli

                phases.append(lambda probe: cli.phase(args, report, probe, base))
            else:
                not_run.append("cli: no KES v0.16.1 binary (its CLI)")
        if "sdk" in only:
            if args.sdk and args.kes_newest:
                import sdk

                phases.append(lambda probe: sdk.phase(args, report, probe, base))
            else:
                not_run.append("sdk: no kms-go client program or no newest KES")
        if "integration" in only:
            if args.kes_integration:
                import integration

                phases.append(lambda probe: integration.phase(args, report, probe, base))
            else:
                not_run.append("integration: no KES v0.16.1 integration test binary")
        if "storage" in only:
            if args.kes_v016:
                import storage

                phases.append(lambda probe: storage.phase(args, report, probe, base))
            else:
                not_run.append("storage: no KES v0.16.1 binary")
        in_parallel(phases, args.probe, workers=len(phases) or 1)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(base, ignore_errors=True)
        else:
            say(f"work directory kept: {base}")
    stale = differences.stale(report.ran)
    # The README's compatibility table lists the same differences, word for word.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for reason in sorted({d.reason for d in differences.entries}):
        if reason not in readme:
            report.unexplained.append(f"differences.toml reason missing from README.md's compatibility table: {reason}")
    say("")
    say(f"compared: {', '.join(f'{n} {k}s' for k, n in sorted(report.counts.items()))} in {time.monotonic() - started:.0f} s")
    if report.deliberate:
        say("deliberate differences seen (tests/compat/differences.toml):")
        for reason, n in sorted(report.deliberate.items()):
            say(f"  {n:4d} parts × {reason}")
    for line in not_run + report.not_run:
        say(f"!!! NOT RUN: {line}")
    if report.unexplained:
        say(f"{len(report.unexplained)} UNEXPLAINED DIFFERENCES:")
        for u in report.unexplained:
            say("  " + u)
    if stale:
        say(f"{len(stale)} listed differences no longer occur (remove them from differences.toml):")
        for d in stale:
            say(f"  case {d.case} part {d.part}: {d.reason}")
    return 1 if report.unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())
