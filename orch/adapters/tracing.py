"""OpenTelemetry traces of a run: a thin adapter, off unless the standard OTLP endpoint variable is set.

With OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set, and the `otel` extra installed,
`run_span` opens a trace for the run (under the caller's TRACEPARENT, when it has one) and exports its spans over
OTLP/HTTP — the SDK's own exporter, so its other variables (headers, timeout, certificates, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES) apply. Without it, every function here is a no-op and nothing from opentelemetry is
imported: a run's start-up does not pay for tracing it does not do.

Exporting never fails or holds up a run: spans go out in batches from a background thread, each request is bounded
(EXPORT_TIMEOUT seconds unless OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT says otherwise), and the final flush waits at
most FLUSH_SECONDS; an endpoint that is down costs its spans, nothing else.

Spans are opened with `span(name, attrs)`, attributes named by the OpenTelemetry GenAI semantic conventions where
they apply (`agent_attrs`, `usage_attrs`) and `codex_orch.*` otherwise. doit runs steps in threads, which start with
an empty context: a span opened where no span is current is a child of the run's span.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

ENDPOINT_VARIABLES = ('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT')
TIMEOUT_VARIABLES = ('OTEL_EXPORTER_OTLP_TRACES_TIMEOUT', 'OTEL_EXPORTER_OTLP_TIMEOUT')
EXPORT_TIMEOUT = 2.0     # seconds, one export request (the SDK's default is 10)
FLUSH_SECONDS = 3.0      # the most a run's end waits for its last spans to go out
PROVIDER = 'openai'      # Codex's model provider, as gen_ai.provider.name (and the older gen_ai.system) name it

Attrs = Mapping[str, Any]


class Span:
    """A span being recorded; the no-op one (`recording` False) ignores everything."""

    recording = False

    def set(self, attrs: Attrs) -> None:
        """Add attributes (None values are left out)."""

    def fail(self, description: str) -> None:
        """Mark the span failed (status ERROR) without an exception."""


NOOP = Span()


class _Recording(Span):
    recording = True

    def __init__(self, span: Any) -> None:
        self.span = span

    def set(self, attrs: Attrs) -> None:
        self.span.set_attributes(_clean(attrs))

    def fail(self, description: str) -> None:
        from opentelemetry.trace import Status, StatusCode
        self.span.set_status(Status(StatusCode.ERROR, description[:500]))


class _Tracing:
    """The run's tracer and span (one run per process at a time; the lock makes a second one a no-op)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tracer: Any = None
        self.root: Any = None       # the context of the run's span: the parent of spans opened in doit's threads


_state = _Tracing()


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """An OTLP endpoint is set (and the SDK is not disabled): a run exports traces."""
    env = os.environ if environ is None else environ
    if env.get('OTEL_SDK_DISABLED', '').strip().lower() == 'true':
        return False
    return any(env.get(name, '').strip() for name in ENDPOINT_VARIABLES)


def active() -> bool:
    return _state.tracer is not None


@contextlib.contextmanager
def run_span(run_id: str, attrs: Attrs | None = None) -> Iterator[Span]:
    """The run's root span, with the exporter set up before and flushed (bounded) after."""
    if not configured() or not _state.lock.acquire(blocking=False):
        yield NOOP
        return
    try:
        provider = _provider()
        if provider is None:
            yield NOOP
            return
        try:
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
            tracer = provider.get_tracer('codex-orch')
            # under the caller's trace (a CI job's TRACEPARENT), when it gives one
            parent = TraceContextTextMapPropagator().extract(
                {k: os.environ[v] for k, v in (('traceparent', 'TRACEPARENT'), ('tracestate', 'TRACESTATE'))
                 if os.environ.get(v)})
            with tracer.start_as_current_span('codex-orch run', context=parent, attributes=_clean(
                    {'codex_orch.run.id': run_id, **(attrs or {})})) as root:
                from opentelemetry import context
                _state.tracer, _state.root = tracer, context.get_current()
                try:
                    yield _Recording(root)
                finally:
                    _state.tracer = _state.root = None
        finally:
            _shutdown(provider)
    finally:
        _state.lock.release()


@contextlib.contextmanager
def span(name: str, attrs: Attrs | None = None) -> Iterator[Span]:
    """A child of the current span (or of the run's, in a thread with none); an exception passing through marks
    it failed. A no-op outside a traced run."""
    tracer, root = _state.tracer, _state.root
    if tracer is None:
        yield NOOP
        return
    from opentelemetry import trace
    parent = None if trace.get_current_span().get_span_context().is_valid else root
    with tracer.start_as_current_span(name, context=parent, attributes=_clean(attrs or {})) as current:
        yield _Recording(current)


def past_span(name: str, start: float, end: float, attrs: Attrs) -> None:
    """A child of the current span for something that already happened (times from time.time())."""
    tracer = _state.tracer
    if tracer is None or not start or end < start:
        return
    current = tracer.start_span(name, start_time=int(start * 1e9), attributes=_clean(attrs))
    current.end(end_time=int(end * 1e9))


def traceparent() -> dict[str, str]:
    """TRACEPARENT (and TRACESTATE) of the current span, for a child process's environment; {} when not tracing."""
    if _state.tracer is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return {key.upper(): value for key, value in carrier.items()}


def agent_attrs(task_id: str, round_name: str, model: str | None) -> dict[str, Any]:
    """A worker turn: an agent invocation (GenAI semantic conventions), with the task and round it belongs to."""
    return {'gen_ai.operation.name': 'invoke_agent', 'gen_ai.provider.name': PROVIDER, 'gen_ai.system': PROVIDER,
            'gen_ai.agent.name': task_id, 'gen_ai.request.model': model, 'codex_orch.task.id': task_id,
            'codex_orch.round': round_name}


def usage_attrs(usage: Mapping[str, Any] | None, prefix: str = 'gen_ai.usage.') -> dict[str, Any]:
    """Codex's token counts: input and output under the GenAI names (prefix), the rest under codex_orch.usage.*"""
    usage = usage or {}
    out: dict[str, Any] = {f'{prefix}input_tokens': usage.get('input_tokens'),
                           f'{prefix}output_tokens': usage.get('output_tokens')}
    for key in ('cached_input_tokens', 'reasoning_output_tokens'):
        out[f'codex_orch.usage.{key}'] = usage.get(key)
    return out


def _clean(attrs: Attrs) -> dict[str, Any]:
    """Attribute values OpenTelemetry takes: None left out, anything not a scalar (or a list of str) as text."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            out[key] = list(value)
        else:
            out[key] = str(value)
    return out


def _provider() -> Any:
    """The SDK's tracer provider with a batching OTLP/HTTP exporter; None (said once) without the `otel` extra."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        print(f'codex-orch: {ENDPOINT_VARIABLES[1]} is set, but OpenTelemetry is not installed ({exc}): no traces '
              "are sent; install codex-orch with its `otel` extra (pip install 'codex-orch[otel]')", file=sys.stderr)
        return None
    from orch import __version__
    attrs = {'service.version': __version__}
    if not os.environ.get('OTEL_SERVICE_NAME'):
        attrs['service.name'] = 'codex-orch'
    provider = TracerProvider(resource=Resource.create(attrs), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=_export_timeout())))
    return provider


def _export_timeout() -> float:
    """Seconds one export request may take: the standard variables' when set, else EXPORT_TIMEOUT."""
    for name in TIMEOUT_VARIABLES:
        with contextlib.suppress(ValueError):
            return float(os.environ.get(name) or '')
    return EXPORT_TIMEOUT


def _shutdown(provider: Any) -> None:
    """The last spans sent, waiting at most FLUSH_SECONDS (longer when the export timeout is set longer); a daemon
    thread, so that an endpoint that hangs is left behind."""
    done = threading.Thread(target=provider.shutdown, name='otel-shutdown', daemon=True)
    done.start()
    done.join(max(FLUSH_SECONDS, _export_timeout() + 1))
