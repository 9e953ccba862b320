"""The parts of the compatibility harness: certificates, servers, the HTTP probe, masking
and comparison, and the list of deliberate differences.

Everything runs on loopback with certificates minted for the run. Each server is a real
process: the reference KES of an era and keyhost, started from the same configuration
file (only the address and the keystore directory differ).
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent


# --- certificates -----------------------------------------------------------------------


@dataclass
class Cred:
    """A client's certificate and key files and its KES identity."""

    name: str
    cert: Path
    key: Path
    identity: str


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def identity_of(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashes_sha256(spki)


def hashes_sha256(data: bytes) -> str:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize().hex()


class Pki:
    """A CA, a server certificate for 127.0.0.1, and client certificates it signs."""

    def __init__(self, directory: Path):
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        self._now = now
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "compat test CA")])
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.cert"
        self.ca_file.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._leaf("localhost", key, server=True)
        self.server_cert = directory / "server.cert"
        self.server_key = directory / "server.key"
        self.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(self.server_key, key)

    def _leaf(self, cn: str, key, server: bool = False, usages: list | None = None) -> x509.Certificate:
        import ipaddress

        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(hours=1))
            .not_valid_after(self._now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    usages or [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return b.sign(self.ca_key, hashes.SHA256())

    def client(self, name: str, self_signed: bool = False, server_usage: bool = False) -> Cred:
        """A client certificate signed by the CA, or a self-signed one (not trusted by
        `--auth on`). With `server_usage` it allows TLS server authentication too, as
        KES v0.16 asked of a certificate a proxy forwards (Go's default usage)."""
        key = ec.generate_private_key(ec.SECP256R1())
        if self_signed:
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(self._now - datetime.timedelta(hours=1))
                .not_valid_after(self._now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(key, hashes.SHA256())
            )
        else:
            usages = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH] if server_usage else None
            cert = self._leaf(name, key, usages=usages)
        c, k = self.dir / f"{name}.cert", self.dir / f"{name}.key"
        c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(k, key)
        return Cred(name, c, k, identity_of(cert))


# --- processes --------------------------------------------------------------------------


_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in a run (parts start their
    servers at the same time)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with _ports_lock:
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port


class Probe:
    """The Go HTTP client (probe/probe.go), one request per line."""

    def __init__(self, binary: Path):
        self.proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def send(self, **req) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the HTTP probe exited")
        out = json.loads(line)
        out["body"] = base64.b64decode(out.get("body") or "")
        return out

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


class Server:
    """A server process: `argv` run in `workdir`, serving https://127.0.0.1:`port`."""

    def __init__(self, label: str, argv: list[str], workdir: Path, port: int, env: dict | None = None):
        self.label = label
        self.url = f"https://127.0.0.1:{port}"
        self.port = port
        self.workdir = workdir
        self.log = workdir / "server.log"
        self._log = open(self.log, "ab")
        full_env = dict(os.environ)
        full_env.pop("SSL_CERT_FILE", None)
        full_env.pop("SSL_CERT_DIR", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            argv, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT, env=full_env
        )

    def wait_ready(self, probe: Probe, cred: Cred, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited at start-up:\n{self.log.read_text(errors='replace')}")
            r = probe.send(url=self.url, method="GET", path="/version", cert=str(cred.cert), key=str(cred.key), proto="h1")
            if r["status"] == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} did not answer within {timeout} s:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --- comparison -------------------------------------------------------------------------

# JSON fields whose values are random or time-dependent: compared by type only.
RANDOM_FIELDS = {
    "plaintext",
    "ciphertext",
    "hmac",
    "uptime",
    "expiry",
    "created_at",
    "time",
    "num_cpu",
    "num_cpu_used",
    "mem_heap_used",
    "mem_stack_used",
    "keystore_latency",
    "commit",
}


def _mask(value, key: str | None = None):
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if key in RANDOM_FIELDS:
        return f"<{type(value).__name__}>"
    return value


def _sorted_if_list(value):
    """Lists compare as sets: KES answers in map or store order."""
    if isinstance(value, list):
        if all(isinstance(v, (str, int, float)) for v in value):
            return sorted(value)
        return sorted(value, key=lambda v: json.dumps(v, sort_keys=True))
    return value


def _metrics_shape(text: str) -> list[str]:
    """A Prometheus exposition without its values: families, types and label names."""
    shape = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            shape.add(line)
        elif line and not line.startswith("#"):
            series = line.rsplit(" ", 1)[0]
            name, _, labels = series.partition("{")
            label_names = sorted(re.findall(r'(\w+)="', labels))
            if name.endswith("_bucket"):
                label_names = [l for l in label_names if l != "le"]
            shape.add(f"{name} {label_names}")
    return sorted(shape)


@dataclass
class View:
    """What a client reads from a response, masked: compared part by part."""

    parts: dict = field(default_factory=dict)


def view(resp: dict) -> dict[str, object]:
    """The comparable parts of a probe response: status, content type, the trailer
    declaration, trailer values, and the body (JSON field by field, NDJSON and
    order-free lists as sets, Prometheus text as its shape)."""
    if resp.get("error") and not resp.get("status"):
        return {"transport": _normalize_transport(resp["error"])}
    headers = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
    parts: dict[str, object] = {
        "status": resp["status"],
        "content-type": (headers.get("content-type") or [None])[0],
        "header.trailer": (headers.get("trailer") or [None])[0],
        "header.accept": (headers.get("accept") or [None])[0],
    }
    trailers = {k.lower(): v for k, v in (resp.get("trailers") or {}).items()}
    parts["trailers"] = {k: v for k, v in sorted(trailers.items())} or None
    body: bytes = resp["body"]
    ctype = parts["content-type"] or ""
    if "x-ndjson" in ctype:
        lines = []
        for line in body.decode(errors="replace").splitlines():
            try:
                lines.append(json.dumps(_mask(json.loads(line)), sort_keys=True))
            except ValueError:
                lines.append("<not json> " + line)
        parts["body.lines"] = sorted(lines)
        return parts
    if "version=0.0.4" in ctype or body.startswith(b"# HELP"):
        parts["body.metrics"] = _metrics_shape(body.decode(errors="replace"))
        return parts
    try:
        doc = json.loads(body.decode())
    except ValueError:
        parts["body"] = body.decode(errors="replace")
        return parts
    if isinstance(doc, dict):
        masked = _mask(doc)
        for k, v in masked.items():
            parts[f"body.{k}"] = _sorted_if_list(v)
        parts["body.fields"] = sorted(masked)
        # An error's exact bytes (KES v0.16 printf'd `{"message":"..."}`, the newest
        # has a newline inside the object); successes compare field by field.
        if not (set(doc) & RANDOM_FIELDS) and resp["status"] >= 300:
            parts["body.raw"] = body.decode(errors="replace")
    else:
        parts["body"] = _sorted_if_list(_mask(doc))
    return parts


def _normalize_transport(err: str) -> str:
    """The kind of a failed exchange. A refused client certificate surfaces, in TLS
    1.3, on whichever read or write first meets the server's alert (a TLS alert, a
    broken pipe, a reset): all of them are one outcome, the connection refused. The
    alert's name is not compared."""
    if re.search(r"remote error: tls:|broken pipe|connection reset|EOF|could not be established", err):
        return "connection refused by the server's TLS"
    err = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", err)
    return re.sub(r'"https://127\.0\.0\.1:PORT[^"]*"', '"URL"', err)


def differing(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k)]


# --- deliberate differences ---------------------------------------------------------------


@dataclass
class Difference:
    case: str
    part: str
    reason: str
    used: int = 0


class Differences:
    """`differences.toml`: each deliberate difference names the cases (a glob over case
    ids) and the part of the answer that differs, and says why. A difference that is
    not listed fails the run, and so does a listed one that no longer shows up."""

    def __init__(self, path: Path = HERE / "differences.toml"):
        data = tomllib.loads(path.read_text())
        self.entries = [Difference(d["case"], d["part"], d["reason"]) for d in data.get("difference", [])]

    def explain(self, case: str, part: str) -> Difference | None:
        for d in self.entries:
            if fnmatch.fnmatchcase(case, d.case) and (d.part == part or fnmatch.fnmatchcase(part, d.part)):
                d.used += 1
                return d
        return None

    def stale(self, ran: set[str]) -> list[Difference]:
        """Entries that matched nothing although cases of their kind ran."""
        return [d for d in self.entries if d.used == 0 and any(fnmatch.fnmatchcase(c, d.case) for c in ran)]


class Report:
    def __init__(self, differences: Differences):
        self.differences = differences
        self.compared = 0
        self.deliberate: dict[str, int] = {}
        self.unexplained: list[str] = []
        self.ran: set[str] = set()
        self.counts: dict[str, int] = {}
        self.not_run: list[str] = []
        self._lock = threading.Lock()

    def compare(self, kind: str, case: str, ref: dict, ours: dict) -> None:
        with self._lock:
            self._compare(kind, case, ref, ours)

    def _compare(self, kind: str, case: str, ref: dict, ours: dict) -> None:
        self.compared += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.ran.add(case)
        for part in differing(ref, ours):
            d = self.differences.explain(case, part)
            if d:
                self.deliberate[d.reason] = self.deliberate.get(d.reason, 0) + 1
                continue
            self.unexplained.append(
                f"{case}: {part}\n      KES:     {json.dumps(ref.get(part))[:400]}\n      keyhost: {json.dumps(ours.get(part))[:400]}"
            )


_said = threading.local()


def say(msg: str) -> None:
    """Prints `msg`; inside a task of `in_parallel`, keeps it for the task's turn."""
    lines = getattr(_said, "lines", None)
    if lines is not None:
        lines.append(msg)
        return
    print(msg, flush=True)
    sys.stdout.flush()


def in_parallel(tasks: list, probe_binary: Path, workers: int) -> None:
    """Runs each task, a function of a Probe of its own, on up to `workers` threads.
    The parts spend their time waiting on servers and streams, not computing. What
    each task says is printed in the tasks' order once all have finished; then the
    first failure, if any, is raised."""

    def one(task):
        _said.lines = []
        probe = Probe(probe_binary)
        try:
            task(probe)
            return _said.lines, None
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the others finish
            return _said.lines, e
        finally:
            probe.close()
            _said.lines = None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(one, tasks))
    for lines, _ in outcomes:
        for line in lines:
            say(line)
    for _, error in outcomes:
        if error is not None:
            raise error


def which(name: str) -> str | None:
    return shutil.which(name)
