"""What OpenTelemetry tracing costs a run: fresh runs of an N-task plan with the fake worker, untraced and traced
(OTEL_EXPORTER_OTLP_ENDPOINT pointing at an OTLP/HTTP receiver in this process), interleaved.

Usage: python benchmarks/tracing_cost.py [RUNS] [TASKS]   (default 5 runs each way, 20 independent tasks)

Prints the median wall time of a whole `codex-orch run` each way, the median of the pairwise ratios, the cost per
task in ms, and the spans the receiver got per traced run.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.lib import Sample, interleave, make_host, make_plan, med, paired_ratio
from tests.support.otlp_receiver import OtlpReceiver


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else 5
    tasks = int(argv[1]) if len(argv) > 1 else 20
    with tempfile.TemporaryDirectory() as tmp, OtlpReceiver() as receiver:
        host = make_host(Path(tmp) / 'host', make_plan('independent', tasks))
        plain = {k: v for k, v in host.env.items() if not k.startswith('OTEL_')}
        traced = {**plain, 'OTEL_EXPORTER_OTLP_ENDPOINT': receiver.endpoint}

        def run(env: dict[str, str]) -> Sample:
            host.env = env
            return host.orch('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '-q')
        res = interleave({'untraced': lambda: run(plain), 'traced': lambda: run(traced)}, runs)
        untraced_s = med([s.wall for s in res['untraced']])
        traced_s = med([s.wall for s in res['traced']])
        print(f'{tasks} tasks, {runs} runs each way (after one warm-up pair)')
        print(f'untraced run: {untraced_s:.3f} s   traced run: {traced_s:.3f} s')
        print(f'traced / untraced, median of pairs: {paired_ratio(res["traced"], res["untraced"]):.3f}')
        print(f'cost per task: {(traced_s - untraced_s) / tasks * 1000:.1f} ms')
        print(f'spans received per traced run: {len(receiver.spans) / (runs + 1):.0f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:]))
