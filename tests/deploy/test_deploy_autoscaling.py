"""The autoscaler's queries, evaluated by Prometheus's own engine (``promtool test rules``).

The KEDA ScaledObject of the GPU overlay (which the chart renders identically) asks
Prometheus two questions. Here promtool answers them on series shaped as the coordinator
exports them (labels as deploy/prometheus/prometheus-kubernetes.yml sets them):

- waiting-requests: 20 and 12 requests waiting on two workers make 32, so KEDA asks for
  ceil(32 / 16) = 2 workers; another namespace's queues do not count; with no worker at
  all the answer is 0, not "no data" (which KEDA would count as an error);
- demand: a coordinator refusing requests with 503 while no worker exists (scaled to
  zero) gives a rate above 0, which activates the pool; an idle one gives 0.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCALED_OBJECT = ROOT / "k8s/overlays/gpu/autoscaling/keda-scaledobject.yaml"
TOOL_TIMEOUT_S = 60
FRONT = 'job="sllm",namespace="sllm-system",app="central-coordinator"'
ANSWERS = "sllm_frontdoor_requests_total"


def queries() -> dict[str, str]:
    scaled = yaml.safe_load(SCALED_OBJECT.read_text())
    return {t["name"]: t["metadata"]["query"] for t in scaled["spec"]["triggers"]}


def test_the_scaling_queries_answer_as_keda_needs(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; .ci/run does)")
    asked = queries()
    waiting, demand = asked["waiting-requests"], asked["demand"]
    threshold = int(
        yaml.safe_load(SCALED_OBJECT.read_text())["spec"]["triggers"][0]["metadata"]["threshold"]
    )
    tests = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    {
                        "series": f'sllm_worker_queue_depth{{{FRONT},worker="worker-0"}}',
                        "values": "20x20",
                    },
                    {
                        "series": f'sllm_worker_queue_depth{{{FRONT},worker="worker-1"}}',
                        "values": "12x20",
                    },
                    {
                        "series": 'sllm_worker_queue_depth{job="sllm",namespace="other",'
                        'app="central-coordinator",worker="w"}',
                        "values": "500x20",
                    },
                    {
                        "series": f'{ANSWERS}{{{FRONT},model="m",status="503"}}',
                        "values": "0+3x20",  # 3 refusals every 15 s
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": waiting,
                        "eval_time": "4m",
                        "exp_samples": [{"labels": "{}", "value": 32}],
                    },
                    {
                        "expr": demand,
                        "eval_time": "4m",
                        "exp_samples": [{"labels": "{}", "value": 0.2}],
                    },
                ],
            },
            {
                "interval": "15s",
                "input_series": [
                    # Scaled to zero and idle: no queue series at all, a flat counter.
                    {
                        "series": f'{ANSWERS}{{{FRONT},model="m",status="200"}}',
                        "values": "7x20",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": waiting,
                        "eval_time": "4m",
                        "exp_samples": [{"labels": "{}", "value": 0}],
                    },
                    {
                        "expr": demand,
                        "eval_time": "4m",
                        "exp_samples": [{"labels": "{}", "value": 0}],
                    },
                ],
            },
        ],
    }
    path = tmp_path / "scaling-test.yml"
    path.write_text(yaml.safe_dump(tests))
    checked = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert -(-32 // threshold) == 2  # the workers KEDA asks for on the first test's queues
