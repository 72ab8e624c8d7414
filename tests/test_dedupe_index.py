"""`distill dedupe --index redis://HOST:PORT/NAME`: one dedupe index many processes share, on a
real redis-server (skipped where the binary is absent)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_dedupe import _bench, chat, redis_server, write_jsonl

from distill.cli import cli
from distill.runs import read_jsonl
from distill.stages.dedupe import DedupeConfig, dedupe_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_url():
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    """A corpus with planted near-copies, split into alternate records so that many of one
    half's examples are near-copies of the other's; and seeds, some copied in both halves."""
    d = tmp_path_factory.mktemp("corpus")
    records, _ = _bench().make_corpus(400, dup_rate=0.3, seed=5)
    seeds = records[:6]
    body = records[6:]
    # each half also carries exact and near copies of two seeds
    a = body[0::2] + [dict(seeds[0], id="copy-a0"), dict(seeds[1], id="copy-a1")]
    b = body[1::2] + [dict(seeds[0], id="copy-b0"), dict(seeds[2], id="copy-b2")]
    return (
        write_jsonl(d / "seeds.jsonl", seeds),
        write_jsonl(d / "a.jsonl", a),
        write_jsonl(d / "b.jsonl", b),
        write_jsonl(d / "ab.jsonl", a + b),
    )


def dedupe_cmd(src: Path, out: Path, *flags: str) -> list[str]:
    cmd = [sys.executable, "-m", "distill", "dedupe", "--input", str(src), "--output", str(out)]
    return cmd + list(flags)


def kept_ids(path: Path) -> list[str]:
    return [r["id"] for r in read_jsonl(path)]


def reasons(out: Path) -> dict[str, str]:
    rejected = out.with_name(out.name.replace(".jsonl", ".rejected.jsonl"))
    return {r["id"]: r["reason"] for r in read_jsonl(rejected)}


def shard_of(out: Path) -> int:
    report = out.with_name(out.name.replace(".jsonl", ".dedupe_report.json"))
    return json.loads(report.read_text())["parameters"]["index_shard"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_two_processes_into_one_index_keep_what_one_process_keeps(tmp_path, redis_url, halves):
    url, _ = redis_url
    seeds, a, b, ab = halves
    procs = [
        subprocess.Popen(
            dedupe_cmd(
                src,
                tmp_path / f"{src.stem}.jsonl",
                "--seeds",
                str(seeds),
                "--index",
                f"{url}/shared",
            ),
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for src in (a, b)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    outs = {shard_of(tmp_path / "a.jsonl"): "a", shard_of(tmp_path / "b.jsonl"): "b"}
    assert sorted(outs) == [1, 2]  # each claimed its own place in the index
    first, second = outs[1], outs[2]
    together = kept_ids(tmp_path / f"{first}.jsonl") + kept_ids(tmp_path / f"{second}.jsonl")

    # one process over both halves in the order the shards took
    both = write_jsonl(
        tmp_path / "both.jsonl",
        list(read_jsonl(halves[1 if first == "a" else 2]))
        + list(read_jsonl(halves[1 if second == "a" else 2])),
    )
    one = dedupe_file(both, tmp_path / "one.jsonl", DedupeConfig(index=f"{url}/one"), seeds=seeds)
    assert together == kept_ids(tmp_path / "one.jsonl")
    # the seeds come out once, from the first shard; the second removed its copies as exact
    # duplicates of the first shard's seeds, naming them and where they came from
    seed_ids = kept_ids(seeds)
    assert kept_ids(tmp_path / f"{first}.jsonl")[:6] == seed_ids
    assert not set(seed_ids) & set(kept_ids(tmp_path / f"{second}.jsonl"))
    why = reasons(tmp_path / f"{second}.jsonl")
    src = halves[1 if first == "a" else 2].resolve()
    assert why[seed_ids[0]].startswith(
        f"exact duplicate of seed {seed_ids[0]} in index shared, shard 1 ("
    )
    assert why[seed_ids[0]].endswith(f":{src})")
    # the test has teeth: many of the second half's examples went for the first half's
    cross = [r for r in why.values() if "in index shared, shard 1" in r and "jaccard" in r]
    assert len(cross) > 20
    assert one.kept == len(together) and one.near > 20


def test_other_minhash_settings_than_the_index_holds_are_one_line(tmp_path, redis_url):
    url, _ = redis_url
    src = write_jsonl(tmp_path / "in.jsonl", [chat("hello there friend", "hi! how can i help?")])
    base = ["dedupe", "--input", str(src), "--output", str(tmp_path / "o.jsonl")]
    res = CliRunner().invoke(cli, [*base, "--index", f"{url}/team"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, [*base, "--index", f"{url}/team", "--threshold", "0.7"])
    assert res.exit_code == 2
    (line,) = res.output.strip().splitlines()
    assert "made with other MinHash settings" in line
    assert "threshold 0.8 (this run: 0.7)" in line and "rows 9 (this run:" in line
    res = CliRunner().invoke(cli, [*base, "--index", f"{url}/nosuch", "--against"])
    assert res.exit_code == 2 and "no index named nosuch" in res.output
    res = CliRunner().invoke(cli, [*base, "--index", "redis://127.0.0.1:1/bad name"])
    assert res.exit_code == 2 and "expected redis://HOST:PORT/NAME" in res.output


def test_against_checks_a_run_without_adding_it(tmp_path, redis_url, make_run):
    url, client = redis_url
    index = f"{url}/teams"
    records, _ = _bench().make_corpus(5, dup_rate=0.0, seed=1)
    theirs = [{**r, "id": f"t{i}"} for i, r in enumerate(records)]
    other = write_jsonl(tmp_path / "other-team.jsonl", theirs)
    res = CliRunner().invoke(
        cli,
        ["dedupe", "--input", str(other), "--output", str(tmp_path / "o.jsonl"), "--index", index],
    )
    assert res.exit_code == 0, res.output
    keys_before = sorted(client.keys("*"))

    new = [
        dict(theirs[1], id="n1"),  # the same example
        {  # a near-copy
            "id": "n3",
            "messages": [
                *theirs[3]["messages"][:-1],
                {"role": "assistant", "content": theirs[3]["messages"][-1]["content"] + " Bye!"},
            ],
        },
        chat("How often should I water a fern?", "Keep its soil moist, never soggy.", id="n9"),
        chat("How often should I water a fern?", "Keep its soil moist, never soggy!", id="n10"),
    ]
    run = make_run("mine", new)
    for _ in range(2):  # checking again gives the same answer: nothing was added
        res = CliRunner().invoke(
            cli, ["dedupe", "--run", str(run.path), "--index", index, "--against"]
        )
        assert res.exit_code == 0, res.output
        assert "duplicates of earlier shards removed" in res.output
        assert "checked against it, not added" in res.output
        assert [r["id"] for r in read_jsonl(run.file("deduped.jsonl"))] == ["n9"]
        why = {r["id"]: r["reason"] for r in read_jsonl(run.file("rejected.jsonl"))}
        where = f"in index teams, shard 1 ({__import__('socket').gethostname()}:{other.resolve()})"
        assert why["n1"] == f"exact duplicate of t1 {where}"
        assert why["n3"].startswith("near-duplicate of t3 (jaccard 0.") and why["n3"].endswith(
            where
        )
        assert why["n10"].startswith("near-duplicate of n9 (jaccard 0.")  # within the run
        assert sorted(client.keys("*")) == keys_before
    stage = run.stage("dedupe")
    assert stage["index"] == index and stage["in_index"] == 2 and stage["index_shard"] == 0


@pytest.fixture(scope="module")
def big_and_small(tmp_path_factory):
    """4,300 examples (two hashing chunks, so a kill can land between them) and 700 more,
    200 of them light edits of the first file's examples."""
    import random

    bench = _bench()
    d = tmp_path_factory.mktemp("kill")
    records, _ = bench.make_corpus(4800, dup_rate=0.2, seed=9)
    rng = random.Random(3)
    edits = [
        {"id": f"edit{i}", "messages": bench.light_edit(rng, records[i]["messages"]), "meta": {}}
        for i in rng.sample(range(4300), 200)
    ]
    return write_jsonl(d / "big.jsonl", records[:4300]), write_jsonl(
        d / "small.jsonl", records[4300:] + edits
    )


def kill_while_indexing(cmd: list[str], client, name: str) -> None:
    """Start `cmd` and SIGKILL it once its shard holds some examples but is not finished:
    Redis pauses writes at that moment, so the kill lands inside the indexing pass."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not client.hlen(f"distill:index:{name}:rec:1"):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.005)
    client.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
    try:
        assert client.hget(f"distill:index:{name}:shard:1", "state") == b"indexing"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        client.execute_command("CLIENT", "UNPAUSE")


def test_a_shard_killed_midway_resumes_and_a_later_shard_waits_for_it(
    tmp_path, redis_url, big_and_small
):
    url, client = redis_url
    big, small = big_and_small
    index = f"{url}/k"
    kill_while_indexing(dedupe_cmd(big, tmp_path / "big.jsonl", "--index", index), client, "k")
    assert 0 < client.hlen("distill:index:k:rec:1") < 4096  # half-indexed
    assert not (tmp_path / "big.jsonl").exists()

    later = subprocess.Popen(
        dedupe_cmd(small, tmp_path / "small.jsonl", "--index", index),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while client.hget("distill:index:k:shard:2", "state") != b"indexed":
        assert later.poll() is None, later.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    assert later.poll() is None  # it waits for shard 1, which earlier examples are missing

    rerun = CliRunner().invoke(cli, dedupe_cmd(big, tmp_path / "big.jsonl", "--index", index)[3:])
    assert rerun.exit_code == 0, rerun.output
    assert shard_of(tmp_path / "big.jsonl") == 1  # the rerun took its old place, and none
    # of its own half-indexed examples counted as its duplicates (checked below)
    _, err = later.communicate(timeout=120)
    assert later.returncode == 0, err.decode()

    # what one process keeps over both files, in an index of its own
    both = write_jsonl(tmp_path / "both.jsonl", [*read_jsonl(big), *read_jsonl(small)])
    one = dedupe_file(both, tmp_path / "one.jsonl", DedupeConfig(index=f"{url}/ref"))
    together = kept_ids(tmp_path / "big.jsonl") + kept_ids(tmp_path / "small.jsonl")
    assert together == kept_ids(tmp_path / "one.jsonl")
    assert (
        sum("in index k, shard 1" in r for r in reasons(tmp_path / "small.jsonl").values()) >= 190
    )
    assert one.near > 500


def test_a_shard_that_never_finishes_is_named_and_can_be_dropped(
    tmp_path, redis_url, big_and_small
):
    url, client = redis_url
    big, small = big_and_small
    index = f"{url}/d"
    kill_while_indexing(dedupe_cmd(big, tmp_path / "big.jsonl", "--index", index), client, "d")
    args = [
        "dedupe",
        "--input",
        str(small),
        "--output",
        str(tmp_path / "s.jsonl"),
        "--index",
        index,
    ]
    res = CliRunner().invoke(cli, [*args, "--index-wait", "0.5"])
    assert res.exit_code == 1
    (line,) = res.output.strip().splitlines()
    assert (
        f"earlier shard(s) 1 ({__import__('socket').gethostname()}:{big.resolve()}) still indexing"
        in line
    )
    assert "--drop-shard N" in line
    res = CliRunner().invoke(cli, ["dedupe", "--index", index, "--drop-shard", "1"])
    assert res.exit_code == 0 and "shard 1 dropped" in res.output
    res = CliRunner().invoke(cli, [*args, "--index-wait", "0.5"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "s.dedupe_report.json").read_text())
    assert report["parameters"]["index_shard"] == 2  # its place was kept
    assert report["parameters"]["compared_with_shards"] == []
    assert report["counts"]["duplicates_in_index"] == 0  # the half-indexed shard was left out
