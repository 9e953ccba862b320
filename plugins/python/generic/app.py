"""A keyhost keystore plugin in Python: KES's "generic" keystore REST protocol.

KES v0.16 to 2023 could keep keys in any service that spoke a small REST protocol
(`internal/generic/spec-v1.md`); KES dropped it in 2023. This plugin lets such services
keep serving keys to keyhost:

    POST   /v1/key/<name>   {"bytes": "<base64 record>"}  201 created, 400 exists
    GET    /v1/key/<name>   200 {"bytes": "<base64 record>"}, 404 missing
    DELETE /v1/key/<name>   200 deleted, 404 missing
    GET    /v1/key          NDJSON lines {"name": "<name>", "last": <bool>}

Built with componentize-py against keyhost's WIT (world keystore-plugin-http):

    componentize-py -d ../../../wit -w keyhost:keystore/keystore-plugin-http \\
        componentize app -o generic_py.wasm

Setting: `endpoint`, the service's URL; keyhost must grant it (allow.http).
"""

import base64
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import keyhost_keystore_types as kt
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import store as config
from wit_world.imports import wasi_http_types as http

SETTINGS = [
    kt.Setting(
        name="endpoint",
        required=True,
        secret=False,
        description="the generic keystore service's URL, e.g. http://127.0.0.1:7001",
    ),
]

# One instance serves one call at a time; the endpoint is read once, in open().
_endpoint = None


def fail(error):
    raise Err(error)


def send(method, path, body=None):
    """One HTTP exchange through wasi:http; returns (status, body bytes)."""
    scheme, authority = _endpoint.split("://", 1)
    headers = [("content-type", b"application/json")] if body is not None else []
    request = http.OutgoingRequest(http.Fields.from_list(headers))
    request.set_method(method)
    request.set_scheme(http.Scheme_Https() if scheme == "https" else http.Scheme_Http())
    request.set_authority(authority.rstrip("/"))
    request.set_path_with_query(path)
    outgoing = request.body()
    # Hand the request to the host first, then stream the body: the host reads it
    # while we write, so bodies larger than one buffer do not block.
    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        transport_failure(e.value)
    if body:
        with outgoing.write() as stream:
            for at in range(0, len(body), 4096):
                stream.blocking_write_and_flush(body[at : at + 4096])
    http.OutgoingBody.finish(outgoing, None)
    with future.subscribe() as ready:
        ready.block()
    answer = future.get()
    if answer is None or isinstance(answer, Err):
        fail(kt.Error_Unavailable(f"no answer from {_endpoint}"))
    if isinstance(answer.value, Err):
        transport_failure(answer.value.value)
    outcome = answer.value.value
    if not hasattr(outcome, "status"):
        fail(kt.Error_Unavailable(f"cannot reach {_endpoint}: {outcome}"))
    status = outcome.status()
    data = bytearray()
    with outcome.consume() as incoming:
        with incoming.stream() as stream:
            while True:
                try:
                    data += stream.blocking_read(65536)
                except Err as e:
                    if isinstance(e.value, streams.StreamError_Closed):
                        break
                    raise
    return status, bytes(data)


def transport_failure(code):
    """A request that got no answer: the host's refusal (the origin is not
    granted) is access-denied, anything else unavailable."""
    if "HttpRequestDenied" in type(code).__name__:
        fail(kt.Error_AccessDenied(f"{_endpoint} is not granted to this plugin (allow.http)"))
    fail(kt.Error_Unavailable(f"cannot reach {_endpoint}: {code}"))


def check(status, data, ok):
    if status in ok:
        return
    if status == 404:
        fail(kt.Error_NotFound())
    if status == 400 and b"exists" in data:
        fail(kt.Error_AlreadyExists())
    if status in (401, 403):
        fail(kt.Error_AccessDenied(f"the service refused: HTTP {status}"))
    if status == 429:
        fail(kt.Error_Throttled(None))
    fail(kt.Error_Unavailable(f"the service answered HTTP {status}"))


def valid(name):
    # Names go into the URL path: only what needs no escaping.
    allowed = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-.")
    if not name or len(name) > 255 or name[0] == "." or not set(name) <= allowed:
        fail(kt.Error_InvalidArgument(f"'{name}' is not a portable key name"))
    return name


class Store(exports.Store):
    def info(self):
        return kt.PluginInfo(name="generic-py", version="0.1.0", features=[], settings=SETTINGS)

    def open(self):
        global _endpoint
        values = dict(config.get_all())
        known = {s.name for s in SETTINGS}
        for key in values:
            if key not in known:
                fail(kt.Error_InvalidArgument(f"unknown setting '{key}'; this plugin reads endpoint"))
        endpoint = values.get("endpoint", "").strip()
        if not endpoint:
            fail(kt.Error_InvalidArgument("missing required setting 'endpoint': the service's URL"))
        if any(not 33 <= ord(c) <= 126 for c in endpoint):
            fail(kt.Error_InvalidArgument("setting 'endpoint' holds a space, a control or a non-ASCII character; it must be an http(s) URL"))
        if not endpoint.startswith(("http://", "https://")):
            fail(kt.Error_InvalidArgument(f"setting 'endpoint': {endpoint} is not an http(s) URL"))
        _endpoint = endpoint.rstrip("/")

    def status(self):
        status, data = send(http.Method_Get(), "/v1/key")
        check(status, data, (200,))
        return kt.Health(latency_ms=None, detail=None)

    def create(self, name, value):
        body = json.dumps({"bytes": base64.b64encode(value).decode()}).encode()
        status, data = send(http.Method_Post(), "/v1/key/" + valid(name), body)
        check(status, data, (200, 201))

    def get(self, name):
        status, data = send(http.Method_Get(), "/v1/key/" + valid(name))
        check(status, data, (200,))
        return base64.b64decode(json.loads(data)["bytes"])

    def delete(self, name):
        status, data = send(http.Method_Delete(), "/v1/key/" + valid(name))
        check(status, data, (200, 204))

    def list(self, prefix, after, limit):
        status, data = send(http.Method_Get(), "/v1/key")
        check(status, data, (200,))
        names = set()
        for line in data.splitlines():
            if line.strip():
                names.add(json.loads(line)["name"])
        # Byte order, as the contract requires.
        chosen = sorted(
            (n for n in names if n.startswith(prefix) and (after is None or n.encode() > after.encode())),
            key=str.encode,
        )
        limit = max(limit, 1)
        more = len(chosen) > limit
        chosen = chosen[:limit]
        return kt.Page(names=chosen, next=chosen[-1] if more else None)
