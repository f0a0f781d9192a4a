"""The worker liveness probe of deploy/ works, on the embedded filesystem broker and on real brokers:
a running worker answers the remote-control ping addressed to its node name; a missing one does not."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.test_manifests import K8S_CONTAINER, k8s_object, pod_containers
from tests.integration.conftest import ALL_STACKS, BrokerStack, make_stack
from tests.processes import wait_until

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


@pytest.fixture(params=ALL_STACKS)
def stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          master_key_text: str) -> Iterator[BrokerStack]:
    yield from make_stack(request, tmp_path, monkeypatch, master_key_text)


def _probe(stack: BrokerStack, probe: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "HOSTNAME": socket.gethostname(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", probe], env=env, capture_output=True, text=True, timeout=60,
                          cwd=stack.log_dir)


def test_liveness_probe_pings_the_running_worker(stack: BrokerStack) -> None:
    kind, name, container = K8S_CONTAINER["worker-audit"]
    spec = pod_containers(k8s_object(kind, name))[container]
    command = list(spec["command"])
    queue_at = command.index("-Q") + 1
    command[queue_at] = stack.env.get("KEYMETA_QUEUE_PREFIX", "") + command[queue_at]
    command[0] = str(BIN / command[0])
    worker = stack.start("worker-audit", command)
    probe = spec["livenessProbe"]["exec"]["command"][2]
    assert "--timeout" in shlex.split(probe)

    def pong() -> bool:
        assert worker.alive(), worker.output()[-3000:]
        return _probe(stack, probe.replace("--timeout 10", "--timeout 2")).returncode == 0

    wait_until(pong, timeout=60, interval=0.5, message="the audit worker to answer its liveness probe")
    answered = _probe(stack, probe)
    assert "pong" in answered.stdout
    assert f"audit@{socket.gethostname()}" in answered.stdout

    absent = _probe(stack, probe.replace("audit@", "webhooks@").replace("--timeout 10", "--timeout 2"))
    assert absent.returncode != 0
