"""Models deployed at runtime, end to end, with real processes: `sllm deploy` of a model no
process knew at start makes it servable through the front door (the official `openai`
client), a coordinator restart keeps it, and `sllm delete` removes it everywhere.

The same checkpoint is deployed a second time by its Hugging Face id, from a hub served on
127.0.0.1 (`fakehub`), which the coordinator describes and the worker fetches from.

The coordinator keeps its registry in a SQLite file (REGISTRY_PATH) and serves the admin
API under ADMIN_KEY; the worker follows the registry on the coordinator's HTTP port
(COORDINATOR_HTTP_PORT) and starts with the default simulated catalog only, so the tiny
transformers model reaches it through the registry alone.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import openai
import pytest

from sllm.experiments.launcher import ServiceProcess, child_environment

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-key-for-tests"
MODEL = "deployed-tiny"
HUB_MODEL = "hub-tiny"
HUB_REPO = "acme/tiny-llama"


def _free_port(kind: int) -> int:
    """A port free now on 127.0.0.1, so a restarted coordinator can take the same one."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _sllm(*args: str) -> tuple[int, str]:
    """Run the `sllm` command as a process; its exit status and its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sllm",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=child_environment(),
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def _chat(base_url: str, model: str) -> openai.types.chat.ChatCompletion:
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
    try:
        return await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=4,
            temperature=0,
        )
    finally:
        await client.close()


async def test_a_deployed_model_is_served_survives_a_restart_and_is_deleted(
    real, serving_helpers, fake_hub, tmp_path
) -> None:
    base_env, events_of = serving_helpers.base_env, serving_helpers.events_of
    wait_for, marked_pids = serving_helpers.wait_for, serving_helpers.marked_pids
    udp_port, http_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    fake_hub.add(HUB_REPO, real.model.directory)
    env = base_env(
        REGISTRY_PATH=str(tmp_path / "registry.sqlite3"),
        ADMIN_KEY=ADMIN_KEY,
        HF_ENDPOINT=fake_hub.url,
    )
    base_url = f"http://127.0.0.1:{http_port}"
    coordinator_args = ["coordinator", "--port", str(udp_port), "--http-port", str(http_port)]
    admin = ["--url", base_url, "--admin-key", ADMIN_KEY]
    services: list[ServiceProcess] = []
    try:
        coordinator = await ServiceProcess.start("coordinator", coordinator_args, env)
        services.append(coordinator)
        worker_args = ["worker", "--node-id", "w1", "--port", "0", "--http-port", "0"]
        worker_args += ["--coordinator-port", str(udp_port)]
        worker_env = {**env, "COORDINATOR_HTTP_PORT": str(http_port)}
        worker_env["MODEL_CACHE_DIR"] = str(tmp_path / "cache")
        worker = await ServiceProcess.start("w1", worker_args, worker_env, ready_timeout=30)
        services.append(worker)

        with pytest.raises(openai.NotFoundError):  # nobody knows it yet
            await _chat(base_url, MODEL)
        status, output = await _sllm(
            "deploy",
            MODEL,
            "--source",
            str(real.model.directory),
            "--engine",
            "transformers",
            "--wait",
            *admin,
        )
        assert status == 0, output
        assert f"{MODEL}: ready" in output
        answer = await _chat(base_url, MODEL)
        assert answer.usage.completion_tokens >= 1
        # The same checkpoint by its Hugging Face id: described with the hub's hashes,
        # fetched by the worker from the hub.
        status, output = await _sllm(
            "deploy",
            HUB_MODEL,
            "--source",
            f"hf://{HUB_REPO}",
            "--engine",
            "transformers",
            "--wait",
            *admin,
        )
        assert status == 0, output
        assert (await _chat(base_url, HUB_MODEL)).usage.completion_tokens >= 1
        assert fake_hub.downloads("model.safetensors"), "the worker fetched from the hub"
        status, output = await _sllm("models", "--json", *admin)
        listed = {entry["name"]: entry for entry in json.loads(output)}
        assert listed[MODEL]["status"] == "ready"
        assert {f["path"] for f in listed[MODEL]["files"]} >= {"config.json", "tokenizer.json"}

        await coordinator.kill()  # the restart: the same ports, the same registry file
        coordinator = await ServiceProcess.start("coordinator-2", coordinator_args, env)
        services.append(coordinator)
        await wait_for(
            lambda: events_of(worker, "registry_applied"), 10, "the worker read the registry"
        )
        answer = await _chat(base_url, MODEL)  # placed once the worker reports again
        assert answer.choices[0].message.content is not None

        status, output = await _sllm("delete", MODEL, *admin)
        assert status == 0, output
        with pytest.raises(openai.NotFoundError):
            await _chat(base_url, MODEL)
        await wait_for(
            lambda: any(e.get("model") == MODEL for e in events_of(worker, "model_retired")),
            10,
            "the worker freed the deleted model",
        )
        status, output = await _sllm("delete", MODEL, *admin)
        assert status == 1 and "does not exist" in output
    except BaseException:
        for service in services:
            print(f"--- {service.name}\n" + "\n".join(list(service.lines)[-25:]), file=sys.stderr)
        raise
    finally:
        await asyncio.gather(*(service.kill() for service in services))
    assert marked_pids(env["SLLM_TEST_MARKER"]) == []
