"""The invalid-keys workload: its wrk script floods one unknown key, its report trusts only signed 100s."""

from __future__ import annotations

from urllib.parse import parse_qs

from bench.__main__ import UNKNOWN_API_KEY, RefusalReport, parse_args
from bench.probe import ProbeResult
from bench.report import TargetRun
from bench.wrk import RESULT_MARK, invalid_keys_lua_script, parse_wrk_output


def _result(requests: int, responses: str, status_errors: int = 0) -> str:
    return (RESULT_MARK + f'{{"requests":{requests},"duration_us":10000000,"bytes":1,'
            f'"errors":{{"connect":0,"read":0,"write":0,"status":{status_errors},"timeout":0}},'
            '"latency_us":{"p50":20000,"p90":30000,"p99":60000,"max":90000,"mean":21000},'
            f'"responses":{responses}}}\n')


def _run(name: str, stdout: str, workload: str) -> TargetRun:
    return TargetRun(name=name, wrk=parse_wrk_output(stdout), probe=ProbeResult(checked=3, verified=3, problems=[]),
                     workload=workload)


def test_the_flood_sends_one_body_with_the_unknown_key() -> None:
    form = {"api_key": UNKNOWN_API_KEY, "license_key": "LK-1", "identifier": "x.example", "key": "k", "value": "v"}
    script = invalid_keys_lua_script(form)
    body = script.split('local static_body = "', 1)[1].split('"', 1)[0]
    assert parse_qs(body)["api_key"] == [UNKNOWN_API_KEY]
    assert "return wrk.format(nil, nil, nil, static_body)" in script
    assert '"code":100,' in script and RESULT_MARK in script


def test_the_report_compares_the_flood_with_creates_and_flags_any_other_answer() -> None:
    config = {**vars(parse_args(["--workload", "invalid-keys"])), "workers": 2}
    flood = _run("invalid-keys", _result(8000, '{"401":8000,"100":8000,"other":0}', status_errors=8000),
                 "invalid-keys")
    create = _run("create-meta", _result(4000, '{"2xx":4000,"453":4000,"452":0,"other":0}'), "create")
    good = RefusalReport(config=config, flood=flood, create=create)
    good.check()
    assert good.problems == []
    assert good.ratio == 2.0
    assert "ratio invalid-keys/create-meta: 2.00" in good.to_table()
    assert '"ok": true' in good.to_json()

    leaked = _run("invalid-keys", _result(8000, '{"401":7990,"100":7990,"other":10}', status_errors=7990),
                  "invalid-keys")
    bad = RefusalReport(config=config, flood=leaked, create=create)
    bad.check()
    assert len(bad.problems) == 1 and "every answer must be a 401 with code 100" in bad.problems[0]
