"""The parts of the bench that run without a benchmark: parsing, the checks, the ceiling app, the backends' set-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bench import ceiling_app, embedded
from bench.all import BACKENDS, commands
from bench.cpu import CpuMeter, cpu_seconds, process_tree
from bench.probe import ProbeResult
from bench.report import BenchReport, TargetRun, to_json, to_table
from bench.wrk import (
    MIX,
    MUTATIONS,
    OPERATIONS,
    RESULT_MARK,
    MixedPools,
    lua_script,
    mix_schedule,
    mixed_lua_script,
    parse_seconds,
    parse_wrk_output,
)
from domain.signing.rsa_keys import generate_private_key, private_pem, public_pem, thumbprint
from domain.signing.verification import verify_envelope

WRK_STDOUT = """Running 10s test @ http://127.0.0.1:40123/api/v1/create-license-key-meta
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    26.12ms   10.01ms 190.33ms   80.00%
    Req/Sec     1.22k   150.00     1.50k    70.00%
  24400 requests in 10.00s, 12.10MB read
Requests/sec:   2440.00
Transfer/sec:      1.21MB
BENCH_RESULT {"requests":24400,"duration_us":10000000,"bytes":12687654,\
"errors":{"connect":0,"read":0,"write":0,"status":3,"timeout":1},\
"latency_us":{"p50":24000,"p90":38000,"p99":65000,"max":190330,"mean":26120},\
"responses":{"2xx":24397,"453":24390,"452":0,"other":10}}
"""


def test_parse_wrk_output() -> None:
    result = parse_wrk_output(WRK_STDOUT)
    assert result.requests == 24400
    assert result.rps == pytest.approx(2440.0)
    assert result.latency_ms["p50"] == pytest.approx(24.0)
    assert result.latency_ms["p99"] == pytest.approx(65.0)
    assert result.error_count == 4
    assert result.responses["453"] == 24390


def test_parse_wrk_output_without_result_line() -> None:
    with pytest.raises(ValueError, match="no result line"):
        parse_wrk_output("Running 10s test @ http://127.0.0.1:1/\n")


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("2m", 120.0), ("500ms", 0.5), ("3", 3.0)])
def test_parse_seconds(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


def test_lua_script_makes_every_key_unique() -> None:
    form = {"api_key": "km_a/b+c", "license_key": "LK-1", "identifier": "x.example", "key": "k", "value": "v w"}
    script = lua_script(form, "m1a2b-")
    assert 'local static_body = "api_key=km_a%2Fb%2Bc&identifier=x.example&value=v+w"' in script
    assert 'local licenses = {"LK-1"}' in script  # without a list: the form's own license key
    assert '"&key=" .. key_prefix .. tid .. "-" .. sent' in script
    assert RESULT_MARK in script
    with pytest.raises(ValueError):
        lua_script(form, 'bad"prefix%')


def test_lua_script_spreads_creates_over_the_license_keys_in_turn() -> None:
    form = {"api_key": "km_a", "license_key": "LK-1", "identifier": "x.example", "key": "k", "value": "v"}
    script = lua_script(form, "m1-", ["LK-1", "LK-2", "LK-3"], threads=4)
    assert 'local licenses = {"LK-1","LK-2","LK-3"}' in script
    assert "local wrk_threads = 4" in script
    # request n (from 0) of thread t goes to license (n * threads + t) mod #licenses, before n is counted
    assert "licenses[(sent * wrk_threads + tid) % #licenses + 1]" in script
    assert script.index("licenses[(sent * wrk_threads") < script.index("sent = sent + 1")
    assert '"&license_key=" .. license' in script
    with pytest.raises(ValueError, match="license key"):
        lua_script(form, "m1-", ["LK 1"])  # would need form encoding
    with pytest.raises(ValueError, match="license key"):
        lua_script(form, "m1-", ['LK"1'])  # would end the Lua string


def test_mix_schedule_is_the_issue_mix_interleaved() -> None:
    schedule = mix_schedule()
    assert MIX == {"create": 60, "update": 25, "get": 10, "delete": 5}
    assert len(schedule) == 20  # the smallest whole cycle of 60/25/10/5
    assert {op: schedule.count(op[0]) * 5 for op in MIX} == MIX
    assert "dd" not in schedule + schedule and "gg" not in schedule + schedule  # no bursts, across cycles too
    assert mix_schedule({"create": 50, "update": 0, "get": 50, "delete": 0}) in ("cg", "gc")


def _pools(delete_slots: int = 1000) -> MixedPools:
    return MixedPools(license_keys=("LK-1", "LK-2", "LK-3"), update_keys=("s1-u0", "s1-u1"),
                      delete_prefix="s1-dm", delete_slots=delete_slots)


def _lua_string(script: str, name: str) -> str:
    line = next(line for line in script.splitlines() if line.startswith(f"local {name} = "))
    return line.split(" = ", 1)[1].strip('"')


def test_mixed_lua_script_sends_the_mix_with_its_parameters() -> None:
    form = {"api_key": "km_a/b", "license_key": "LK-1", "identifier": "x.example", "key": "k", "value": "v"}
    script = mixed_lua_script(form, "m1a2b-", _pools(), threads=2)
    schedule = _lua_string(script, "schedule")
    assert schedule == mix_schedule()
    assert {op: schedule.count(op[0]) / len(schedule) * 100 for op in MIX} == MIX
    # the schedule picks the operation of every request, in turn
    assert "schedule:sub(sent % #schedule + 1, sent % #schedule + 1)" in script
    # every request: the API key and identifier; the license key and meta key per operation
    assert _lua_string(script, "static_body") == "api_key=km_a%2Fb&identifier=x.example"
    assert 'local licenses = {"LK-1","LK-2","LK-3"}' in script
    assert 'local pool = {"s1-u0","s1-u1"}' in script
    assert 'local delete_prefix = "s1-dm"' in script and "local delete_slots = 1000" in script
    assert "local wrk_threads = 2" in script
    for op, (path, code) in OPERATIONS.items():
        assert f'{op[0]} = "{path}"' in script
        assert f"""{op[0]} = '"code":{code},'""" in script
    branches = {op: script.split(f'op == "{op[0]}" then', 1)[1].split("elseif", 1)[0] for op in ("create", "update",
                                                                                                 "get")}
    branches["delete"] = script.split("  else\n    nd = nd + 1", 1)[1].split("  end\n", 1)[0]
    assert '"&key=" .. key_prefix .. tid .. "-" .. nc' in branches["create"] and "&value=" in branches["create"]
    assert "pool[" in branches["update"] and "&value=" in branches["update"]
    assert "key_prefix .. tid" in branches["update"]  # every update writes a value no other request writes
    assert "pool[" in branches["get"] and "&value=" not in branches["get"]
    assert '"&key=" .. delete_prefix .. s' in branches["delete"] and "&value=" not in branches["delete"]
    assert "if s >= delete_slots then dexhausted = dexhausted + 1 end" in branches["delete"]
    for branch in branches.values():
        assert "licenses[s % #licenses + 1]" in branch or "licenses[slot(nc - 1) % #licenses + 1]" in branch
    # mutations carry an Idempotency-Key no other request carries; gets none
    assert set(MUTATIONS) == {"create", "update", "delete"}
    assert 'if op == "g" or not keyed then headers["Idempotency-Key"] = nil' in script
    assert "local keyed = true" in script
    assert "local keyed = false" in mixed_lua_script(form, "m1a2b-", _pools(), threads=2, keyed=False)
    assert 'else headers["Idempotency-Key"] = key_prefix .. tid .. "-" .. sent end' in script
    assert 'return wrk.format("POST", paths[op], headers, body)' in script
    assert RESULT_MARK in script
    for field in ('"453"', '"353"', '"4540"', '"252"', '"other"', '"sent_create"', '"sent_delete"',
                  '"delete_pool_exhausted"'):
        assert field in script
    with pytest.raises(ValueError):
        mixed_lua_script(form, "M1", _pools(), threads=2)


def test_mixed_delete_slots_each_exist_once_on_their_license() -> None:
    pools = _pools(delete_slots=7)
    rows = pools.delete_rows()
    assert rows[:4] == [("LK-1", "s1-dm0"), ("LK-2", "s1-dm1"), ("LK-3", "s1-dm2"), ("LK-1", "s1-dm3")]
    assert len({key for _, key in rows}) == 7
    # thread t's k-th delete takes slot k * threads + t: two threads never take the same slot
    taken = [k * 2 + t for t in range(2) for k in range(4)]
    assert len(set(taken)) == len(taken)


def test_mixed_pools_and_probes(tmp_path) -> None:
    from bench.__main__ import DELETE_POOL_RATE, mixed_pools, mixed_probes, parse_args
    from bench.world import BenchWorld
    from domain.platform.settings import Settings

    world = BenchWorld(settings=Settings(database_url="", master_key="m", var_dir=tmp_path / "var"),
                       api_key="a", license_key="L-0", identifier="i", public_keys={},
                       license_keys=("L-0", "L-1"))
    args = parse_args(["--workload", "mixed", "--duration", "10s", "--warmup", "2s"])
    assert (args.workload, args.licenses) == ("mixed", 1024)
    pools = mixed_pools(world, args, "ab12")
    assert pools["warmup"].delete_prefix != pools["measured"].delete_prefix
    assert pools["measured"].delete_slots == DELETE_POOL_RATE * 10 * MIX["delete"] // 100
    assert pools["warmup"].update_keys == pools["measured"].update_keys
    assert pools["measured"].license_keys == ("L-0", "L-1")
    probes = mixed_probes(world, "ab12")
    assert [(call.path, call.code) for call in probes] == list(OPERATIONS.values())
    assert [bool(call.headers.get("Idempotency-Key")) for call in probes] == [True, True, False, True]
    assert len({call.headers.get("Idempotency-Key") for call in probes}) == 4
    assert ["value" in call.form for call in probes] == [True, True, False, False]


def _run(name: str, stdout: str, rows: int | None, probe_ok: bool = True, cpu_s: float = 0.0,
         workload: str = "create", deleted: int | None = None) -> TargetRun:
    probe = ProbeResult(checked=3, verified=3 if probe_ok else 2, problems=[] if probe_ok else ["signature"])
    return TargetRun(name=name, wrk=parse_wrk_output(stdout), probe=probe, db_rows=rows, app_cpu_s=cpu_s,
                     workload=workload, deleted_rows=deleted)


MIXED_RESULT = (RESULT_MARK + '{"requests":20000,"duration_us":10000000,"bytes":1,'
                '"errors":{"connect":0,"read":0,"write":0,"status":0,"timeout":0},'
                '"latency_us":{"p50":20000,"p90":30000,"p99":60000,"max":90000,"mean":21000},'
                '"responses":{"2xx":20000,"453":12000,"353":5000,"4540":2000,"252":1000,"other":0,'
                '"sent_create":12040,"sent_update":5010,"sent_get":2005,"sent_delete":1010,'
                '"delete_pool_exhausted":0}}\n')


def test_mixed_report_checks_every_operation() -> None:
    ceiling = WRK_STDOUT.replace('"status":3,"timeout":1', '"status":0,"timeout":0').replace(
        '"other":10', '"other":0').replace('"requests":24400', '"requests":30000')
    config = {"backend": "embedded", "workers": 2, "connections": 64, "threads": 2, "duration": "10s",
              "licenses": 1024}
    good = BenchReport(config=config, api=_run("mixed", MIXED_RESULT, 12000 + 40, workload="mixed", deleted=1010),
                       ceiling=_run("ceiling", ceiling, None))
    good.check()
    assert good.problems == []
    assert good.target_ratio == 0.6
    assert good.ratio == pytest.approx(2000 / 3000)
    table = to_table(good)
    assert "ratio mixed/ceiling: 0.67" in table and "meets the 0.6 target" in table
    assert "create 12000/12040 453, update 5000/5010 353, get 2000/2005 4540, delete 1000/1010 252" in table
    assert '"mixed": {' in to_json(good)

    bad_output = MIXED_RESULT.replace('"other":0', '"other":3').replace('"delete_pool_exhausted":0',
                                                                        '"delete_pool_exhausted":2')
    bad = BenchReport(config=config, api=_run("mixed", bad_output, 12000, workload="mixed", deleted=900),
                      ceiling=_run("ceiling", ceiling, None))
    bad.check()
    assert len(bad.problems) == 3, bad.problems  # other answers, pool used up, delete rows vs 252s

    unanswered = MIXED_RESULT.replace('"sent_get":2005', '"sent_get":2100')
    lost = BenchReport(config=config, api=_run("mixed", unanswered, 12000, workload="mixed", deleted=1000),
                       ceiling=_run("ceiling", ceiling, None))
    lost.check()
    assert [p for p in lost.problems if "requests sent" in p]


def test_report_checks_and_ratio() -> None:
    clean = WRK_STDOUT.replace('"status":3,"timeout":1', '"status":0,"timeout":0').replace('"other":10', '"other":0')
    ceiling = clean.replace('"requests":24400', '"requests":48800')
    config = {"backend": "postgres", "workers": 2, "connections": 64, "threads": 2, "duration": "10s"}

    good = BenchReport(config=config, api=_run("create-meta", clean, 24390 + 64, cpu_s=24.4),
                       ceiling=_run("ceiling", ceiling, None, cpu_s=24.4))
    good.check()
    assert good.problems == []
    assert good.ratio == pytest.approx(0.5)
    assert good.cpu_ratio == pytest.approx(0.5)  # 1 ms of CPU per create-meta request, 0.5 ms per ceiling one
    assert "ratio create-meta/ceiling: 0.50" in to_table(good)
    assert "ceiling: bare ASGI" in to_table(good)
    assert '"ok": true' in to_json(good)
    assert '"ratio": 0.5' in to_json(good)

    bad = BenchReport(config=config, api=_run("create-meta", WRK_STDOUT, 24390 + 65),
                      ceiling=_run("ceiling", ceiling, None, probe_ok=False))
    bad.check()
    assert len(bad.problems) == 4  # errors, non-453 bodies, row count, probe


def test_ceiling_app_signs_verifiable_envelopes(tmp_path, monkeypatch) -> None:
    key = generate_private_key(2048)
    key_file = tmp_path / "ceiling.pem"
    key_file.write_bytes(private_pem(key))
    monkeypatch.setenv(ceiling_app.KEY_FILE_ENV, str(key_file))
    kid = thumbprint(key.public_key())
    app = ceiling_app.create_app()
    assert not hasattr(app, "router")  # a bare ASGI callable: no framework between uvicorn and the work
    with TestClient(app) as client:
        replies = [client.post(ceiling_app.PATH, data={"key": f"k{i}", "value": "v"}) for i in range(2)]
        assert client.get("/healthz").status_code == 200
        assert client.get("/elsewhere").status_code == 404
    for n, reply in enumerate(replies, start=1):
        assert reply.status_code == 200
        body = reply.json()
        assert body["response"]["code"] == 453
        assert body["response"]["meta_id"] == n
        assert list(body["response"]) == ["code", "message", "meta_id", "timestamp"]
        assert verify_envelope(reply.content, {kid: public_pem(key.public_key())}) == kid
        assert reply.headers["x-signature-key-id"] == kid


def test_ceiling_app_parses_the_body_as_the_real_endpoint_does(monkeypatch) -> None:
    monkeypatch.delenv(ceiling_app.KEY_FILE_ENV, raising=False)
    with TestClient(ceiling_app.create_app()) as client:
        not_utf8 = client.post(ceiling_app.PATH, content=b"key=\xff",
                               headers={"content-type": "application/x-www-form-urlencoded"})
        unknown_type = client.post(ceiling_app.PATH, content=b"<x/>", headers={"content-type": "text/xml"})
    assert (not_utf8.status_code, not_utf8.text) == (400, "form body is not valid UTF-8")
    assert unknown_type.status_code == 400


def test_no_part_offers_or_uses_sqlite() -> None:
    from bench.__main__ import parse_args

    for backend in BACKENDS:
        assert "sqlite" not in " ".join(" ".join(command) for command in commands(backend, quick=True))
    with pytest.raises(SystemExit):
        parse_args(["--backend", "sqlite"])
    assert parse_args([]).backend == "embedded"


def test_embedded_backend_runs_every_part_on_the_embedded_server() -> None:
    bench, mixed, pipeline, webhooks, scale_out = commands("embedded", quick=False)
    assert bench[bench.index("--backend") + 1] == "embedded"
    assert mixed[mixed.index("--workload") + 1] == "mixed" and mixed[:len(bench)] == bench
    assert bench[bench.index("--broker") + 1] == "embedded"
    assert pipeline[pipeline.index("--backend") + 1] == "embedded"
    assert "--postgres" not in webhooks and "--postgres" not in scale_out
    assert scale_out[scale_out.index("--scale-out") + 1] == "1,2"


def test_postgres_backends_use_the_machine_server_and_broker() -> None:
    bench, mixed, pipeline, webhooks, scale_out = commands("postgres-redis", quick=False)
    assert bench[bench.index("--backend") + 1] == "postgres"
    assert mixed[mixed.index("--backend") + 1] == "postgres" and "mixed" in mixed
    assert bench[bench.index("--broker") + 1] == "redis"
    assert pipeline[pipeline.index("--backend") + 1] == "postgres-redis"
    assert "--postgres" in webhooks and "--postgres" in scale_out


def test_embedded_world_passes_no_database_url(tmp_path) -> None:
    from bench.world import BenchWorld
    from domain.platform.settings import Settings

    world = BenchWorld(settings=Settings(database_url="", master_key="m", var_dir=tmp_path / "var"),
                       api_key="a", license_key="l", identifier="i", public_keys={})
    assert "KEYMETA_DATABASE_URL" not in world.env()
    assert world.env()["KEYMETA_VAR_DIR"] == str(tmp_path / "var")


class _FakeServer:
    """Records what the bench asks of the embedded server; starting it fails when told to."""

    def __init__(self, monkeypatch, start_fails: bool = False) -> None:
        self.calls: list[str] = []
        self.start_fails = start_fails
        monkeypatch.setattr(embedded, "start", self.start)
        monkeypatch.setattr(embedded.embedded_postgres, "stop", self.stop)

    def start(self, var_dir: Path) -> None:
        self.calls.append("start")
        if self.start_fails:
            raise embedded.embedded_postgres.EmbeddedPostgresError("boom")

    def stop(self, var_dir: Path) -> bool:
        self.calls.append("stop")
        return True


def test_embedded_server_is_stopped_when_the_run_is_interrupted(tmp_path, monkeypatch) -> None:
    fake = _FakeServer(monkeypatch)
    with pytest.raises(KeyboardInterrupt), embedded.embedded_server(tmp_path / "var"):
        assert fake.calls == ["start"]
        raise KeyboardInterrupt
    assert fake.calls == ["start", "stop"]


def test_embedded_server_is_stopped_when_it_cannot_be_started(tmp_path, monkeypatch) -> None:
    fake = _FakeServer(monkeypatch, start_fails=True)
    with pytest.raises(RuntimeError, match="boom"), embedded.embedded_server(tmp_path / "var"):
        pytest.fail("the block must not run")
    assert fake.calls == ["start", "stop"]


def test_a_failed_stop_is_reported_not_raised(tmp_path, monkeypatch, capsys) -> None:
    def failing_stop(var_dir: Path) -> bool:
        raise embedded.embedded_postgres.EmbeddedPostgresError("did not stop")

    monkeypatch.setattr(embedded.embedded_postgres, "stop", failing_stop)
    assert embedded.stop(tmp_path / "var") is False
    assert "did not stop" in capsys.readouterr().err


def test_sigterm_unwinds_like_ctrl_c() -> None:
    code = ("import os, signal, sys\n"
            "from bench.embedded import exit_on_sigterm\n"
            "exit_on_sigterm()\n"
            "try:\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "finally:\n"
            "    print('cleaned up')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                          cwd=Path(embedded.__file__).resolve().parent.parent)
    assert (done.returncode, done.stdout) == (128 + signal.SIGTERM, "cleaned up\n")


def test_leftover_embedded_servers_are_found_by_their_var_dir(tmp_path) -> None:
    left = tmp_path / "keymeta-bench-a" / "var"
    (left / "postgres").mkdir(parents=True)
    (left / "postgres" / "postmaster.pid").write_text("1\n")
    (tmp_path / "keymeta-bench-b" / "var" / "postgres").mkdir(parents=True)  # stopped: no pid file
    assert embedded.leftover_var_dirs(tmp_path) == [left]


def test_cpu_meter_counts_this_process() -> None:
    assert os.getpid() in process_tree(os.getppid())
    meter = CpuMeter(lambda: [os.getpid()])
    meter.start()
    sum(i * i for i in range(300_000))
    assert meter.stop() >= 0.0
    assert cpu_seconds(os.getpid()) > 0.0


def test_missing_wrk_without_root_is_a_one_line_error(monkeypatch) -> None:
    from bench import wrk

    monkeypatch.setattr(wrk.shutil, "which", lambda name: None)
    monkeypatch.setattr(wrk.os, "geteuid", lambda: 1000)
    with pytest.raises(wrk.WrkMissing, match="install") as caught:
        wrk.ensure_wrk()
    assert "\n" not in str(caught.value)


def test_load_generator_reuses_connections_and_retries_one_the_server_closed() -> None:
    import asyncio

    from bench.loadgen import KeepAlivePool, fixed_rate

    async def scenario() -> tuple[list[tuple[int, object]], list[int]]:
        served: list[int] = []  # requests answered per connection

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            count = 0
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                form = (await reader.readexactly(length)).decode()
                count += 1
                body = b'{"echo": "%s"}' % form.encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if count == 2:  # the server ends the keep-alive after two requests, unannounced
                    break
            served.append(count)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = KeepAlivePool(f"http://127.0.0.1:{port}", max_connections=1)
        results: list[tuple[int, object]] = []

        async def one(i: int) -> None:
            results.append(await pool.post_form("/x", {"n": str(i)}))

        try:
            await fixed_rate(1000, 5, one)
        finally:
            await pool.close()
            server.close()
            await server.wait_closed()
        return results, served

    results, served = asyncio.run(scenario())
    assert [(status, body) for status, body in results] == [(200, {"echo": f"n={i}"}) for i in range(5)]
    assert served[:2] == [2, 2]  # requests 2 and 4 met a connection the server had closed, and were retried


def test_mix_option() -> None:
    from bench.__main__ import parse_args

    assert parse_args([]).mix == MIX
    assert parse_args(["--mix", "create=100"]).mix == {"create": 100, "update": 0, "get": 0, "delete": 0}
    assert parse_args(["--mix", "create=50,get=50"]).mix["get"] == 50
    for bad in ("create=50", "copy=100", "create=x"):
        with pytest.raises(SystemExit):
            parse_args(["--mix", bad])
