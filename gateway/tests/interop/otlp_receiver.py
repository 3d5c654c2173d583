"""A small OTLP/HTTP trace receiver and an MCP backend that records trace context, for
the tracing tests (gateway/tests/it/tracing.rs).

    otlp_receiver.py        prints "listening on http://ADDR/mcp" (the receiver is at
                            http://ADDR/v1/traces)

- POST /v1/traces (protobuf ExportTraceServiceRequest, decoded with the official
  definitions of PyPI `opentelemetry-proto`): every span is kept; GET /spans answers
  them as JSON (trace_id, span_id, parent_span_id in hex; name, kind, service,
  attributes, status).
- POST /mcp: a Streamable HTTP MCP server answering JSON (initialize, tools/list, one
  tool `echo`), which keeps the `traceparent` header and `params._meta.traceparent` of
  every request; GET /seen answers them.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SPANS: list[dict] = []
SEEN: list[dict] = []
LOCK = threading.Lock()


def value_of(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def decode(body: bytes) -> list[dict]:
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        res = {a.key: value_of(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append({
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name,
                    "kind": s.kind,
                    "service": res.get("service.name"),
                    "attributes": {a.key: value_of(a.value) for a in s.attributes},
                    "status": s.status.code,
                })
    return out


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def answer(self, status: int, body: bytes, ctype: str, extra=()):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            doc = {"/spans": SPANS, "/seen": SEEN}.get(self.path)
            body = json.dumps(doc).encode() if doc is not None else b""
        self.answer(200 if doc is not None else 404, body, "application/json")

    def do_DELETE(self):
        self.answer(200, b"", "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/v1/traces":
            spans = decode(body)
            with LOCK:
                SPANS.extend(spans)
            out = ExportTraceServiceResponse().SerializeToString()
            return self.answer(200, out, "application/x-protobuf")
        if self.path != "/mcp":
            return self.answer(404, b"", "text/plain")
        msg = json.loads(body)
        meta = (msg.get("params") or {}).get("_meta") or {}
        with LOCK:
            SEEN.append({
                "method": msg.get("method"),
                "header": self.headers.get("traceparent"),
                "meta": meta.get("traceparent"),
            })
        if "id" not in msg:
            return self.answer(202, b"", "text/plain")
        result = self.result(msg)
        doc = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
        self.answer(200, json.dumps(doc).encode(), "application/json",
                    [("mcp-session-id", "s1")])

    def result(self, msg):
        method = msg.get("method")
        if method == "initialize":
            return {"protocolVersion": msg["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "traced", "version": "1"}}
        if method == "tools/list":
            return {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}
        if method == "tools/call":
            text = msg["params"].get("arguments", {}).get("text", "")
            return {"content": [{"type": "text", "text": text}]}
        return {}


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}/mcp", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
