"""A minimal OTLP/HTTP trace receiver for tests: POST /v1/traces (protobuf), spans decoded with opentelemetry-proto.

    with OtlpReceiver() as receiver:
        monkeypatch.setenv('OTEL_EXPORTER_OTLP_ENDPOINT', receiver.endpoint)
        ...
        receiver.spans   # every span received, as ReceivedSpan
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status: int                 # 0 unset, 1 ok, 2 error
    resource: dict[str, Any]


def _value(v: Any) -> Any:
    kind = v.WhichOneof('value')
    if kind == 'array_value':
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                if self.path != '/v1/traces':
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with lock:
                    receiver.requests += 1
                    for rs in request.resource_spans:
                        resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for s in ss.spans:
                                receiver.spans.append(ReceivedSpan(
                                    name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                                    parent_span_id=s.parent_span_id.hex(),
                                    attributes={a.key: _value(a.value) for a in s.attributes},
                                    status=s.status.code, resource=resource))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header('Content-Type', 'application/x-protobuf')
                self.send_header('Content-Length', str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.endpoint = f'http://127.0.0.1:{self.server.server_address[1]}'
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def by_id(self) -> dict[str, ReceivedSpan]:
        return {s.span_id: s for s in self.spans}

    def ancestors(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        spans, out = self.by_id(), []
        while span.parent_span_id in spans:
            span = spans[span.parent_span_id]
            out.append(span)
        return out
