"""Differential requests: the same sequence of requests to the reference KES of an era
and to keyhost, both started from the same configuration file, compared answer by
answer (see harness.view for what is compared and what is masked).

Each era's sequence runs four times on fresh server pairs: HTTP/1.1 and h2, with client
certificate verification off and on.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness import Cred, Pki, Probe, Report, Server, free_port, view

B64 = lambda b: base64.b64encode(b if isinstance(b, bytes) else b.encode()).decode()  # noqa: E731
KEY32 = B64(bytes(range(32)))


@dataclass
class Case:
    id: str
    who: str
    method: str
    path: str
    # A JSON value, raw bytes, or a function of this server's saved values giving either.
    body: object = None
    headers: dict = field(default_factory=dict)
    # Saved from this server's answer for later cases: name -> JSON field.
    save: dict = field(default_factory=dict)
    # JSON fields compared by value although they are random in general.
    unmask: tuple = ()
    read_ms: int = 0
    # A connection of its own, not one kept from earlier requests.
    fresh: bool = False


def _encode(body, saved) -> str | None:
    if callable(body):
        body = body(saved)
    if body is None:
        return None
    if isinstance(body, bytes):
        return base64.b64encode(body).decode()
    if isinstance(body, str):
        return base64.b64encode(body.encode()).decode()
    return base64.b64encode(json.dumps(body).encode()).decode()


def _ct(saved, name):
    """The JSON document inside a saved (base64) v0.16 ciphertext."""
    return json.loads(base64.b64decode(saved[name]))


def _reframe(saved, name, **changes):
    doc = _ct(saved, name)
    for k, v in changes.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    return B64(json.dumps(doc))


# --- the v0.16 era ----------------------------------------------------------------------------


def v016_config(creds: dict[str, Cred], pki: Pki, port: int, keys: Path) -> str:
    # The request sequence has a TLS proxy and a client behind it; other parts (the
    # integration suite) bring their own credentials without them.
    proxy = (
        f"  proxy:\n    identities:\n    - {creds['proxy'].identity}\n    header:\n      cert: X-Tls-Client-Cert\n"
        if "proxy" in creds
        else ""
    )
    proxied = f"    - {creds['proxied'].identity}\n" if "proxied" in creds else ""
    return f"""address: 127.0.0.1:{port}
root: {creds['root'].identity}
tls:
  key: {pki.server_key}
  cert: {pki.server_cert}
{proxy}policy:
  my-app:
    paths:
    - /v1/key/create/app-*
    - /v1/key/import/app-*
    - /v1/key/generate/app-*
    - /v1/key/encrypt/app-*
    - /v1/key/decrypt/app-*
    - /v1/key/delete/app-*
    - /v1/key/list/*
    - /v1/status
    - /v1/metrics
    - /v1/policy/read/my-app
    - /v1/policy/list/*
    - /v1/identity/list/*
    - /v1/log/error/trace
    identities:
    - {creds['app'].identity}
{proxied}  operator:
    paths:
    - /v1/identity/assign/*
    - /v1/identity/forget/*
    - /v1/policy/write/*
    - /v1/policy/delete/o-*
    identities:
    - {creds['ops'].identity}
log:
  error: on
  audit: off
keystore:
  fs:
    path: {keys}
"""


def v016_cases(creds: dict[str, Cred]) -> list[Case]:
    fresh = creds["fresh"].identity
    ops = creds["ops"].identity
    root = creds["root"].identity
    c: list[Case] = []
    add = lambda *a, **k: c.append(Case(*a, **k))  # noqa: E731
    # Unauthenticated and system routes.
    for who in ("root", "app", "nobody"):
        add(f"version.{who}", who, "GET", "/version")
        add(f"status.{who}", who, "GET", "/v1/status")
    add("metrics.root", "root", "GET", "/v1/metrics")
    add("metrics.nobody", "nobody", "GET", "/v1/metrics")
    add("version.post", "root", "POST", "/version")
    add("version.extra", "root", "GET", "/version/x")
    add("status.extra", "root", "GET", "/v1/status/x")
    for p in ("/", "/v1", "/v1/", "/v1/frobnicate", "/v1/key/frobnicate/k", "/v2/key/create/k", "/v1/key", "/v1/key/create"):
        add(f"unknown{p}", "root", "GET", p)
    # Keys: create.
    add("create.k1", "root", "POST", "/v1/key/create/k1")
    add("create.k1.again", "root", "POST", "/v1/key/create/k1")
    add("create.dotted", "root", "POST", "/v1/key/create/my.key")
    add("create.trailing-slash", "root", "POST", "/v1/key/create/")
    add("create.extra-segment", "root", "POST", "/v1/key/create/a/b")
    add("create.encoded-slash", "root", "POST", "/v1/key/create/a%2Fb")
    add("create.encoded-name", "root", "POST", "/v1/key/create/k%2D2")
    add("create.with-body", "root", "POST", "/v1/key/create/k3", body={"bytes": KEY32})
    add("create.get", "root", "GET", "/v1/key/create/k4")
    add("create.put", "root", "PUT", "/v1/key/create/k4")
    add("create.delete-method", "root", "DELETE", "/v1/key/create/k4")
    add("create.app", "app", "POST", "/v1/key/create/app-1")
    add("create.app.outside-policy", "app", "POST", "/v1/key/create/k5")
    add("create.app.existing-outside-policy", "app", "POST", "/v1/key/create/k1")
    add("create.nobody", "nobody", "POST", "/v1/key/create/app-2")
    # Import.
    add("import.ok", "root", "POST", "/v1/key/import/imp", body={"bytes": KEY32})
    add("import.again", "root", "POST", "/v1/key/import/imp", body={"bytes": KEY32})
    add("import.short", "root", "POST", "/v1/key/import/imp2", body={"bytes": B64(bytes(16))})
    add("import.long", "root", "POST", "/v1/key/import/imp2", body={"bytes": B64(bytes(33))})
    add("import.missing", "root", "POST", "/v1/key/import/imp2", body={})
    add("import.not-json", "root", "POST", "/v1/key/import/imp2", body=b"not json")
    add("import.empty", "root", "POST", "/v1/key/import/imp2", body=b"")
    add("import.not-base64", "root", "POST", "/v1/key/import/imp2", body={"bytes": "%%%"})
    add("import.newest-shape", "root", "POST", "/v1/key/import/imp2", body={"key": KEY32, "cipher": "AES256"})
    add("import.extra-field", "root", "POST", "/v1/key/import/imp3", body={"bytes": KEY32, "x": 1})
    add("import.oversized", "root", "POST", "/v1/key/import/imp4", body={"bytes": KEY32, "pad": "a" * (1 << 20)})
    add("import.app", "app", "POST", "/v1/key/import/app-imp", body={"bytes": KEY32})
    add("import.app.outside-policy", "app", "POST", "/v1/key/import/imp5", body={"bytes": KEY32})
    # Generate.
    add("generate.empty-object", "root", "POST", "/v1/key/generate/k1", body={}, save={"dek": "ciphertext"})
    add("generate.context", "root", "POST", "/v1/key/generate/k1", body={"context": B64("ctx")}, save={"dekc": "ciphertext"})
    add("generate.null-context", "root", "POST", "/v1/key/generate/k1", body={"context": None})
    add("generate.no-body", "root", "POST", "/v1/key/generate/k1")
    add("generate.not-json", "root", "POST", "/v1/key/generate/k1", body=b"{")
    add("generate.bad-context", "root", "POST", "/v1/key/generate/k1", body={"context": "***"})
    add("generate.missing-key", "root", "POST", "/v1/key/generate/nokey", body={})
    add("generate.big-context", "root", "POST", "/v1/key/generate/k1", body={"context": B64(bytes(512 << 10))})
    add("generate.oversized", "root", "POST", "/v1/key/generate/k1", body={"context": B64(bytes(1 << 20))})
    add("generate.imported", "root", "POST", "/v1/key/generate/imp", body={}, save={"dek_imp": "ciphertext"})
    add("generate.app", "app", "POST", "/v1/key/generate/app-1", body={})
    add("generate.app.outside-policy", "app", "POST", "/v1/key/generate/k1", body={})
    add("generate.app.missing-key", "app", "POST", "/v1/key/generate/app-none", body={})
    add("generate.get", "root", "GET", "/v1/key/generate/k1")
    # Encrypt.
    add("encrypt.ok", "root", "POST", "/v1/key/encrypt/k1", body={"plaintext": B64("hello"), "context": B64("ctx")}, save={"ct": "ciphertext"})
    add("encrypt.no-context", "root", "POST", "/v1/key/encrypt/k1", body={"plaintext": B64("hello")}, save={"ct0": "ciphertext"})
    add("encrypt.empty", "root", "POST", "/v1/key/encrypt/k1", body={"plaintext": ""})
    add("encrypt.not-base64", "root", "POST", "/v1/key/encrypt/k1", body={"plaintext": "***"})
    add("encrypt.no-body", "root", "POST", "/v1/key/encrypt/k1")
    add("encrypt.oversized", "root", "POST", "/v1/key/encrypt/k1", body={"plaintext": B64(bytes(400 << 10))})
    add("encrypt.missing-key", "root", "POST", "/v1/key/encrypt/nokey", body={"plaintext": B64("x")})
    add("encrypt.app", "app", "POST", "/v1/key/encrypt/app-1", body={"plaintext": B64("x")}, save={"ct_app": "ciphertext"})
    # Decrypt.
    add("decrypt.ok", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["ct"], "context": B64("ctx")}, unmask=("plaintext",))
    add("decrypt.no-context", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["ct0"]}, unmask=("plaintext",))
    add("decrypt.dek", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["dek"]})
    add("decrypt.dek-context", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["dekc"], "context": B64("ctx")})
    add("decrypt.imported", "root", "POST", "/v1/key/decrypt/imp", body=lambda s: {"ciphertext": s["dek_imp"]})
    add("decrypt.wrong-context", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["ct"], "context": B64("other")})
    add("decrypt.missing-context", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["ct"]})
    add("decrypt.extra-context", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["ct0"], "context": B64("x")})
    add("decrypt.not-a-ciphertext", "root", "POST", "/v1/key/decrypt/k1", body={"ciphertext": B64("not-a-ciphertext")})
    add("decrypt.raw-bytes", "root", "POST", "/v1/key/decrypt/k1", body={"ciphertext": B64(bytes(60))})
    add("decrypt.empty-json", "root", "POST", "/v1/key/decrypt/k1", body={"ciphertext": B64("{}")})
    add("decrypt.empty", "root", "POST", "/v1/key/decrypt/k1", body={"ciphertext": ""})
    add("decrypt.not-base64", "root", "POST", "/v1/key/decrypt/k1", body={"ciphertext": "***"})
    add("decrypt.no-body", "root", "POST", "/v1/key/decrypt/k1")
    add("decrypt.unknown-aead", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": _reframe(s, "ct0", aead="ROT13")})
    add("decrypt.iv-size", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": _reframe(s, "ct0", iv=B64(bytes(8)))})
    add("decrypt.nonce-size", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": _reframe(s, "ct0", nonce=B64(bytes(8)))})
    add("decrypt.bit-flip", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": _reframe(s, "ct0", bytes=B64(bytes(21)))})
    add("decrypt.other-key", "root", "POST", "/v1/key/decrypt/imp", body=lambda s: {"ciphertext": s["ct0"]})
    add("decrypt.other-key-no-id", "root", "POST", "/v1/key/decrypt/imp", body=lambda s: {"ciphertext": _reframe(s, "ct0", id=None)})
    add("decrypt.extra-field", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": _reframe(s, "ct0", x="y")})
    add("decrypt.missing-key", "root", "POST", "/v1/key/decrypt/nokey", body=lambda s: {"ciphertext": s["ct0"]})
    add("decrypt.app", "app", "POST", "/v1/key/decrypt/app-1", body=lambda s: {"ciphertext": s["ct_app"]}, unmask=("plaintext",))
    add("decrypt.app.outside-policy", "app", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["ct0"]})
    # Listings (every form of pattern, every Accept).
    for pat in ("*", "%2A", "k*", "app-*", "", "nothing-*", "[", "k?", "my.key"):
        add(f"list.{pat or 'empty'}", "root", "GET", f"/v1/key/list/{pat}")
    add("list.accept-json", "root", "GET", "/v1/key/list/*", headers={"Accept": "application/json"})
    add("list.accept-ndjson", "root", "GET", "/v1/key/list/*", headers={"Accept": "application/x-ndjson"})
    add("list.app", "app", "GET", "/v1/key/list/*")
    add("list.nobody", "nobody", "GET", "/v1/key/list/*")
    add("list.post", "root", "POST", "/v1/key/list/*")
    add("list.extra", "root", "GET", "/v1/key/list/a/b")
    # Policies (in memory in v0.16).
    add("policy.read", "root", "GET", "/v1/policy/read/my-app")
    add("policy.read.app", "app", "GET", "/v1/policy/read/my-app")
    add("policy.read.app.other", "app", "GET", "/v1/policy/read/operator")
    add("policy.read.missing", "root", "GET", "/v1/policy/read/none")
    add("policy.list", "root", "GET", "/v1/policy/list/*")
    add("policy.list.prefix", "root", "GET", "/v1/policy/list/my*")
    add("policy.list.none", "root", "GET", "/v1/policy/list/zz*")
    add("policy.list.app", "app", "GET", "/v1/policy/list/*")
    add("policy.write", "root", "POST", "/v1/policy/write/o-p1", body={"allow": ["/v1/key/generate/o-*"], "deny": []})
    add("policy.write.read", "root", "GET", "/v1/policy/read/o-p1")
    add("policy.write.only-allow", "root", "POST", "/v1/policy/write/o-p2", body={"allow": ["/v1/status"]})
    add("policy.write.read2", "root", "GET", "/v1/policy/read/o-p2")
    add("policy.write.not-json", "root", "POST", "/v1/policy/write/o-p3", body=b"nope")
    add("policy.write.unknown-field", "root", "POST", "/v1/policy/write/o-p3", body={"allow": [], "paths": []})
    add("policy.write.bad-glob", "root", "POST", "/v1/policy/write/o-p3", body={"allow": ["/v1/key/["]})
    add("policy.write.empty-body", "root", "POST", "/v1/policy/write/o-p3", body=b"")
    add("policy.write.app", "app", "POST", "/v1/policy/write/o-p4", body={"allow": []})
    add("policy.write.ops", "ops", "POST", "/v1/policy/write/o-p5", body={"allow": ["/v1/status"]})
    add("policy.write.get", "root", "GET", "/v1/policy/write/o-p1")
    add("policy.list.after", "root", "GET", "/v1/policy/list/*")
    # Identities.
    add("identity.list", "root", "GET", "/v1/identity/list/*")
    add("identity.list.app", "app", "GET", "/v1/identity/list/*")
    add("identity.assign", "root", "POST", f"/v1/identity/assign/o-p1/{fresh}")
    add("identity.assign.fresh-works", "fresh", "POST", "/v1/key/generate/o-none", body={})
    add("identity.assign.root", "root", "POST", f"/v1/identity/assign/o-p1/{root}")
    add("identity.assign.missing-policy", "root", "POST", f"/v1/identity/assign/none/{fresh}")
    add("identity.assign.self", "ops", "POST", f"/v1/identity/assign/o-p1/{ops}")
    add("identity.assign.ops", "ops", "POST", f"/v1/identity/assign/o-p2/{fresh}")
    add("identity.assign.not-hex", "root", "POST", "/v1/identity/assign/o-p1/not-an-identity")
    add("identity.assign.extra", "root", "POST", f"/v1/identity/assign/o-p1/{fresh}/x")
    add("identity.assign.short", "root", "POST", "/v1/identity/assign/o-p1")
    add("identity.assign.app", "app", "POST", f"/v1/identity/assign/o-p1/{fresh}")
    add("identity.list.after", "root", "GET", "/v1/identity/list/*")
    add("identity.list.pattern", "root", "GET", f"/v1/identity/list/{fresh[:6]}*")
    add("identity.forget", "root", "DELETE", f"/v1/identity/forget/{fresh}")
    add("identity.forget.fresh-denied", "fresh", "POST", "/v1/key/generate/o-none", body={})
    add("identity.forget.again", "root", "DELETE", f"/v1/identity/forget/{fresh}")
    add("identity.forget.root", "root", "DELETE", f"/v1/identity/forget/{root}")
    add("identity.forget.post", "root", "POST", f"/v1/identity/forget/{fresh}")
    add("policy.delete", "root", "DELETE", "/v1/policy/delete/o-p1")
    add("policy.delete.again", "root", "DELETE", "/v1/policy/delete/o-p1")
    add("policy.delete.ops", "ops", "DELETE", "/v1/policy/delete/o-p2")
    add("policy.delete.ops.outside", "ops", "DELETE", "/v1/policy/delete/my-app")
    add("policy.delete.read", "root", "GET", "/v1/policy/read/o-p1")
    add("identity.list.end", "root", "GET", "/v1/identity/list/*")
    # Deleting keys.
    add("delete.k1", "root", "DELETE", "/v1/key/delete/k1")
    add("delete.k1.again", "root", "DELETE", "/v1/key/delete/k1")
    add("delete.missing", "root", "DELETE", "/v1/key/delete/never")
    add("delete.post", "root", "POST", "/v1/key/delete/imp")
    add("delete.app", "app", "DELETE", "/v1/key/delete/app-1")
    add("delete.app.outside-policy", "app", "DELETE", "/v1/key/delete/imp")
    add("delete.after", "root", "POST", "/v1/key/generate/k1", body={})
    add("list.end", "root", "GET", "/v1/key/list/*")
    # Streams: only events after subscribing arrive, so nothing but the headers.
    add("log.error", "root", "GET", "/v1/log/error/trace", read_ms=600)
    add("log.audit", "root", "GET", "/v1/log/audit/trace", read_ms=600)
    add("log.error.app", "app", "GET", "/v1/log/error/trace", read_ms=600)
    add("log.audit.app", "app", "GET", "/v1/log/audit/trace", read_ms=600)
    add("log.old-path", "root", "GET", "/v1/log/audit", read_ms=600)
    add("metrics.end", "root", "GET", "/v1/metrics")
    # A trusted TLS proxy names the client in X-Tls-Client-Cert (URL-escaped PEM, as
    # nginx's $ssl_client_escaped_cert). With --auth on, KES v0.16 verifies the
    # forwarded certificate against the system's CAs with Go's default usage
    # (server authentication), and answers 403 when it does not verify.
    def escaped(who: str) -> str:
        return urllib.parse.quote(creds[who].cert.read_text(), safe="")

    # Each on a connection of its own: KES v0.16 keeps a forwarded certificate for
    # the connection's later requests (the `sticky` cases below).
    def forward(case: str, value: str | None, path: str = "/v1/policy/read/my-app", fresh: bool = True) -> None:
        headers = {} if value is None else {"X-Tls-Client-Cert": value}
        add(f"proxy.{case}", "proxy", "GET", path, headers=headers, fresh=fresh)

    forward("proxied", escaped("proxied"))
    forward("app", escaped("app"))
    forward("selfsigned", escaped("selfsigned"))
    forward("root.status", escaped("root"), "/v1/status")
    forward("none", None)
    forward("empty", "")
    forward("garbage", "garbage")
    forward("bad-escape", escaped("proxied")[:-1] + "%G")
    forward("not-a-certificate", urllib.parse.quote("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", safe=""))
    # Two certificates on one line, as an appending proxy or a merging intermediary
    # writes them: KES v0.16 reads the first one, keyhost refuses the request.
    forward("merged.comma", escaped("root") + "," + escaped("proxied"))
    forward("merged.blocks", escaped("root") + escaped("proxied"))
    # A forwarded request, then one without the header on the same connection: KES
    # v0.16 overwrites the connection's TLS state with the forwarded certificate, so
    # the second acts as the first's client; keyhost refuses it (400).
    forward("sticky.forward", escaped("proxied"), fresh=False)
    forward("sticky.none", None, fresh=False)
    # /version answers any identity.
    add("proxy.direct.version", "proxy", "GET", "/version", fresh=True)
    return c


# --- the newest era ---------------------------------------------------------------------------


def newest_config(creds: dict[str, Cred], pki: Pki, port: int, keys: Path, auth: str) -> str:
    # tls.ca only to verify: the newest KES names its CAs in the handshake even with
    # tls.auth off, and Go clients then hold back certificates none of them signed.
    ca = f"  ca: {pki.ca_file}\n" if auth == "on" else ""
    return f"""version: v1
address: 127.0.0.1:{port}
admin:
  identity: {creds['root'].identity}
tls:
  key: {pki.server_key}
  cert: {pki.server_cert}
  auth: {auth}
{ca}policy:
  my-app:
    allow:
    - /v1/key/create/app-*
    - /v1/key/import/app-*
    - /v1/key/describe/app-*
    - /v1/key/generate/app-*
    - /v1/key/encrypt/app-*
    - /v1/key/decrypt/app-*
    - /v1/key/hmac/app-*
    - /v1/key/delete/app-*
    - /v1/key/list/*
    - /v1/status
    - /v1/metrics
    - /v1/api
    - /v1/ready
    - /v1/policy/describe/my-app
    - /v1/policy/read/my-app
    - /v1/policy/list/*
    - /v1/identity/describe/*
    - /v1/identity/list/*
    - /v1/log/error
    deny:
    - /v1/key/*/app-secret*
    identities:
    - {creds['app'].identity}
  operator:
    allow:
    - /v1/key/generate/*
    identities:
    - {creds['ops'].identity}
log:
  error: on
  audit: off
keystore:
  fs:
    path: {keys}
"""


def newest_cases(creds: dict[str, Cred]) -> list[Case]:
    app = creds["app"].identity
    root = creds["root"].identity
    c: list[Case] = []
    add = lambda *a, **k: c.append(Case(*a, **k))  # noqa: E731
    for who in ("root", "app", "nobody"):
        add(f"version.{who}", who, "GET", "/version")
        add(f"status.{who}", who, "GET", "/v1/status")
        add(f"ready.{who}", who, "GET", "/v1/ready")
        add(f"api.{who}", who, "GET", "/v1/api")
    add("metrics.root", "root", "GET", "/v1/metrics")
    add("metrics.nobody", "nobody", "GET", "/v1/metrics")
    add("version.post", "root", "POST", "/version")
    add("version.extra", "root", "GET", "/version/x")
    add("status.extra", "root", "GET", "/v1/status/x")
    add("status.put", "root", "PUT", "/v1/status")
    for p in ("/", "/v1", "/v1/", "/v1/frobnicate", "/v1/key/frobnicate/k", "/v2/key/create/k", "/v1/key", "/v1/key/create",
              "/v1/key/bulk/decrypt/k1", "/v1/policy/write/p", "/v1/identity/assign/p/x", "/v1/log/audit/trace"):
        add(f"unknown{p}", "root", "GET", p)
    # Create (PUT declared, POST accepted).
    add("create.k1", "root", "POST", "/v1/key/create/k1")
    add("create.k1.again", "root", "POST", "/v1/key/create/k1")
    add("create.put", "root", "PUT", "/v1/key/create/k2")
    add("create.get", "root", "GET", "/v1/key/create/k3")
    add("create.delete-method", "root", "DELETE", "/v1/key/create/k3")
    add("create.dotted", "root", "POST", "/v1/key/create/my.key")
    add("create.underscore", "root", "POST", "/v1/key/create/_")
    add("create.dash-first", "root", "POST", "/v1/key/create/-k")
    add("create.dash-last", "root", "POST", "/v1/key/create/k-")
    add("create.80", "root", "POST", "/v1/key/create/" + "a" * 80)
    add("create.81", "root", "POST", "/v1/key/create/" + "a" * 81)
    add("create.unicode", "root", "POST", "/v1/key/create/%E2%98%B0")
    add("create.trailing-slash", "root", "POST", "/v1/key/create/")
    add("create.extra-segment", "root", "POST", "/v1/key/create/a/b")
    add("create.encoded-slash", "root", "POST", "/v1/key/create/a%2Fb")
    add("create.with-body", "root", "POST", "/v1/key/create/k4", body={"key": KEY32})
    add("create.app", "app", "POST", "/v1/key/create/app-1")
    add("create.app.denied", "app", "POST", "/v1/key/create/app-secret")
    add("create.app.outside-policy", "app", "POST", "/v1/key/create/k5")
    add("create.nobody", "nobody", "POST", "/v1/key/create/app-2")
    # Import.
    for cipher in ("AES256", "AES256-GCM_SHA256", "ChaCha20", "XCHACHA20-POLY1305"):
        add(f"import.{cipher}", "root", "POST", f"/v1/key/import/imp-{cipher.lower()[:6]}{len(cipher)}", body={"key": KEY32, "cipher": cipher})
    add("import.again", "root", "POST", "/v1/key/import/imp-aes2566", body={"key": KEY32, "cipher": "AES256"})
    add("import.unknown-cipher", "root", "POST", "/v1/key/import/imp2", body={"key": KEY32, "cipher": "ROT13"})
    add("import.no-cipher", "root", "POST", "/v1/key/import/imp2", body={"key": KEY32})
    add("import.v016-shape", "root", "POST", "/v1/key/import/imp2", body={"bytes": KEY32})
    add("import.short", "root", "POST", "/v1/key/import/imp2", body={"key": B64(bytes(16)), "cipher": "AES256"})
    add("import.not-json", "root", "POST", "/v1/key/import/imp2", body=b"not json")
    add("import.empty", "root", "POST", "/v1/key/import/imp2", body=b"")
    add("import.oversized", "root", "POST", "/v1/key/import/imp2", body={"key": KEY32, "cipher": "AES256", "pad": "a" * 1_000_001})
    add("import.bad-name", "root", "POST", "/v1/key/import/a.b", body={"key": KEY32, "cipher": "AES256"})
    add("import.put", "root", "PUT", "/v1/key/import/imp3", body={"key": KEY32, "cipher": "AES256"})
    # Describe.
    add("describe.k1", "root", "GET", "/v1/key/describe/k1")
    add("describe.imported", "root", "GET", "/v1/key/describe/imp-chacha8")
    add("describe.missing", "root", "GET", "/v1/key/describe/none")
    add("describe.bad-name", "root", "GET", "/v1/key/describe/a.b")
    add("describe.app", "app", "GET", "/v1/key/describe/app-1")
    add("describe.app.outside", "app", "GET", "/v1/key/describe/k1")
    add("describe.post", "root", "POST", "/v1/key/describe/k1")
    # Generate, encrypt, decrypt, hmac.
    add("generate.no-body", "root", "POST", "/v1/key/generate/k1", save={"dek": "ciphertext"})
    add("generate.put", "root", "PUT", "/v1/key/generate/k1", body={"context": B64("ctx")}, save={"dekc": "ciphertext"})
    add("generate.empty-object", "root", "POST", "/v1/key/generate/k1", body={})
    add("generate.not-json", "root", "POST", "/v1/key/generate/k1", body=b"{")
    add("generate.bad-context", "root", "POST", "/v1/key/generate/k1", body={"context": "***"})
    add("generate.oversized", "root", "POST", "/v1/key/generate/k1", body={"context": B64(bytes(1_000_000))})
    add("generate.missing-key", "root", "POST", "/v1/key/generate/nokey")
    add("generate.bad-name", "root", "POST", "/v1/key/generate/a.b")
    add("generate.app", "app", "POST", "/v1/key/generate/app-1")
    add("generate.app.outside", "app", "POST", "/v1/key/generate/k1")
    add("generate.ops", "ops", "POST", "/v1/key/generate/k1")
    add("generate.get", "root", "GET", "/v1/key/generate/k1")
    add("encrypt.ok", "root", "POST", "/v1/key/encrypt/k1", body={"plaintext": B64("hello"), "context": B64("ctx")}, save={"ct": "ciphertext"})
    add("encrypt.no-context", "root", "PUT", "/v1/key/encrypt/k1", body={"plaintext": B64("hello")}, save={"ct0": "ciphertext"})
    add("encrypt.not-base64", "root", "POST", "/v1/key/encrypt/k1", body={"plaintext": "***"})
    add("encrypt.no-body", "root", "POST", "/v1/key/encrypt/k1")
    add("encrypt.oversized", "root", "POST", "/v1/key/encrypt/k1", body={"plaintext": B64(bytes(800_000))})
    add("encrypt.missing-key", "root", "POST", "/v1/key/encrypt/nokey", body={"plaintext": B64("x")})
    add("encrypt.chacha", "root", "POST", "/v1/key/encrypt/imp-chacha8", body={"plaintext": B64("x")}, save={"ct_chacha": "ciphertext"})
    add("decrypt.ok", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["ct"], "context": B64("ctx")}, unmask=("plaintext",))
    add("decrypt.no-context", "root", "PUT", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["ct0"]}, unmask=("plaintext",))
    add("decrypt.dek", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["dek"]})
    add("decrypt.dek-context", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["dekc"], "context": B64("ctx")})
    add("decrypt.chacha", "root", "POST", "/v1/key/decrypt/imp-chacha8", body=lambda s: {"ciphertext": s["ct_chacha"]}, unmask=("plaintext",))
    add("decrypt.wrong-context", "root", "POST", "/v1/key/decrypt/k1", body=lambda s: {"ciphertext": s["ct"], "context": B64("other")})
    add("decrypt.other-key", "root", "POST", "/v1/key/decrypt/imp-chacha8", body=lambda s: {"ciphertext": s["ct0"]})
    add("decrypt.not-a-ciphertext", "root", "POST", "/v1/key/decrypt/k1", body={"ciphertext": B64("not-a-ciphertext")})
    add("decrypt.empty-json", "root", "POST", "/v1/key/decrypt/k1", body={"ciphertext": B64("{}")})
    add("decrypt.empty", "root", "POST", "/v1/key/decrypt/k1", body={"ciphertext": ""})
    add("decrypt.not-base64", "root", "POST", "/v1/key/decrypt/k1", body={"ciphertext": "***"})
    add("decrypt.no-body", "root", "POST", "/v1/key/decrypt/k1")
    add("decrypt.missing-key", "root", "POST", "/v1/key/decrypt/nokey", body=lambda s: {"ciphertext": s["ct0"]})
    add("hmac.ok", "root", "PUT", "/v1/key/hmac/k1", body={"message": B64("m")})
    add("hmac.post", "root", "POST", "/v1/key/hmac/k1", body={"message": B64("m")})
    add("hmac.imported", "root", "PUT", "/v1/key/hmac/imp-aes2566", body={"message": B64("m")}, unmask=())
    add("hmac.not-json", "root", "PUT", "/v1/key/hmac/k1", body=b"x")
    add("hmac.missing-key", "root", "PUT", "/v1/key/hmac/nokey", body={"message": B64("m")})
    add("hmac.get", "root", "GET", "/v1/key/hmac/k1")
    add("hmac.app", "app", "PUT", "/v1/key/hmac/app-1", body={"message": B64("m")})
    # Listings.
    for pat in ("", "*", "%2A", "k", "k*", "app-", "none", "*-*", "a.b", "a/b"):
        add(f"list.{pat or 'empty'}", "root", "GET", f"/v1/key/list/{pat}")
    add("list.accept-ndjson", "root", "GET", "/v1/key/list/", headers={"Accept": "application/x-ndjson"})
    add("list.app", "app", "GET", "/v1/key/list/")
    add("list.nobody", "nobody", "GET", "/v1/key/list/")
    add("list.post", "root", "POST", "/v1/key/list/")
    # Policies and identities (read-only in this era).
    add("policy.describe", "root", "GET", "/v1/policy/describe/my-app")
    add("policy.describe.app", "app", "GET", "/v1/policy/describe/my-app")
    add("policy.describe.app.other", "app", "GET", "/v1/policy/describe/operator")
    add("policy.describe.missing", "root", "GET", "/v1/policy/describe/none")
    add("policy.describe.bad-name", "root", "GET", "/v1/policy/describe/a.b")
    add("policy.read", "root", "GET", "/v1/policy/read/my-app")
    add("policy.read.missing", "root", "GET", "/v1/policy/read/none")
    for pat in ("", "*", "my", "my*", "z"):
        add(f"policy.list.{pat or 'empty'}", "root", "GET", f"/v1/policy/list/{pat}")
    add("policy.list.app", "app", "GET", "/v1/policy/list/")
    add("identity.describe.admin", "root", "GET", f"/v1/identity/describe/{root}")
    add("identity.describe.app", "root", "GET", f"/v1/identity/describe/{app}")
    add("identity.describe.by-app", "app", "GET", f"/v1/identity/describe/{app}")
    add("identity.describe.unknown", "root", "GET", f"/v1/identity/describe/{'0' * 64}")
    add("identity.describe.bad", "root", "GET", "/v1/identity/describe/not.hex")
    for pat in ("", "*", app[:4], "zz"):
        add(f"identity.list.{pat or 'empty'}", "root", "GET", f"/v1/identity/list/{pat}")
    add("identity.list.app", "app", "GET", "/v1/identity/list/")
    # Deleting keys.
    add("delete.k1", "root", "DELETE", "/v1/key/delete/k1")
    add("delete.k1.again", "root", "DELETE", "/v1/key/delete/k1")
    add("delete.bad-name", "root", "DELETE", "/v1/key/delete/a.b")
    add("delete.post", "root", "POST", "/v1/key/delete/k2")
    add("delete.app", "app", "DELETE", "/v1/key/delete/app-1")
    add("delete.app.outside", "app", "DELETE", "/v1/key/delete/k2")
    add("delete.after", "root", "POST", "/v1/key/generate/k1")
    add("list.end", "root", "GET", "/v1/key/list/")
    # Streams.
    add("log.error", "root", "GET", "/v1/log/error", read_ms=600)
    add("log.audit", "root", "GET", "/v1/log/audit", read_ms=600)
    add("log.error.app", "app", "GET", "/v1/log/error", read_ms=600)
    add("log.audit.app", "app", "GET", "/v1/log/audit", read_ms=600)
    add("metrics.end", "root", "GET", "/v1/metrics")
    # Last: the newest KES answers these 404 for non-admins (a bug), which would
    # change its error counters for the metrics cases above.
    for who in ("root", "app", "nobody"):
        add(f"self.{who}", who, "GET", "/v1/identity/self/describe")
    return c


# --- running ----------------------------------------------------------------------------------


@dataclass
class Pair:
    ref: Server
    ours: Server


def run_sequence(report: Report, probe: Probe, pair: Pair, creds: dict[str, Cred], cases: list[Case], label: str, proto: str) -> None:
    saved = {pair.ref.label: {}, pair.ours.label: {}}
    for case in cases:
        views = []
        for server in (pair.ref, pair.ours):
            cred = creds[case.who]
            body = _encode(case.body, saved[server.label])
            resp = probe.send(
                url=server.url, method=case.method, path=case.path, body=body, headers=case.headers,
                cert=str(cred.cert), key=str(cred.key), proto=proto, read_ms=case.read_ms, fresh=case.fresh,
            )
            for var, fld in case.save.items():
                try:
                    saved[server.label][var] = json.loads(resp["body"])[fld]
                except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                    saved[server.label][var] = ""
            v = view(resp)
            for fld in case.unmask:
                try:
                    v[f"body.{fld}.value"] = json.loads(resp["body"])[fld]
                except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                    v[f"body.{fld}.value"] = None
            views.append(v)
        report.compare("request", f"{label}.{case.id}", views[0], views[1])
