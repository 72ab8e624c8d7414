"""`distill dedupe`: exact and near-duplicate removal, against brute force and datasketch."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.cli import cli
from distill.runs import read_jsonl
from distill.stages.dedupe import (
    DedupeConfig,
    band_keys,
    candidate_pairs,
    dedupe_file,
    example_text,
    lsh_params,
    normalise,
    shingle_hash32,
    shingle_sets,
    shingles,
    signatures,
)

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."


def _bench():
    spec = importlib.util.spec_from_file_location("bench_dedupe", ROOT / "benchmarks" / "dedupe.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def chat(user: str, reply: str, **extra) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": reply},
        ],
        **extra,
    }


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# -- signatures ---------------------------------------------------------------------------------
def test_signatures_equal_datasketch_minhash_per_shingle():
    from datasketch import MinHash

    texts = [
        "Hi, my order GL-48213 is late!",
        "hi",
        "",
        "ab\ncdefg",
        "Ünïcode façade ☃ and emoji 🌿 in a longer reply about repotting",
        "x" * 300,
    ]
    texts = [normalise(t) for t in texts]
    sigs = signatures(texts, num_perm=64, seed=7)
    for i, text in enumerate(texts):
        m = MinHash(num_perm=64, seed=7, hashfunc=shingle_hash32)
        m.update_batch(shingles(text))
        assert np.array_equal(m.hashvalues, sigs[:, i]), text


def test_example_text_leaves_out_system_prompt_and_normalises():
    rec = chat("  Where IS   my\torder? ", "Sorry! It ships today.")
    assert example_text(rec["messages"]) == "where is my order?\nsorry! it ships today."
    assert SYSTEM.lower() not in example_text(rec["messages"])


def test_in_memory_banding_finds_the_same_candidates_as_datasketch_lsh():
    from datasketch import MinHash, MinHashLSH

    rng = random.Random(3)
    words = "plant water order late refund soil pot leaf sorry thanks the a my is".split()
    base = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(60)]
    texts = base + [t.replace("the", "teh", 1) for t in base[:30]]
    params = lsh_params(0.8, 128, (0.1, 0.9))
    sigs = signatures(texts)
    ours = {tuple(p) for p in candidate_pairs(band_keys(sigs, params.bands, params.rows)).tolist()}
    lsh = MinHashLSH(num_perm=128, params=(params.bands, params.rows))
    mhs = []
    for i in range(len(texts)):
        m = MinHash(num_perm=128, hashvalues=sigs[:, i], scheme="affine32")
        lsh.insert(i, m)
        mhs.append(m)
    theirs = {(min(i, j), max(i, j)) for i, m in enumerate(mhs) for j in lsh.query(m) if i != j}
    assert ours == theirs
    assert len(ours) >= 30


def test_candidate_pairs_filtered_band_by_band():
    keys = np.array([[1, 5], [1, 6], [2, 6], [3, 7]], dtype=np.uint64)
    assert candidate_pairs(keys).tolist() == [[0, 1], [1, 2]]
    seen = [0]
    kept = candidate_pairs(keys, lambda p: p[:, 0] == 1, seen)
    assert kept.tolist() == [[1, 2]] and seen == [2]
    assert candidate_pairs(keys, lambda p: np.zeros(len(p), dtype=bool)).shape == (0, 2)


# -- accuracy vs brute force ------------------------------------------------------------------
def test_planted_near_duplicates_precision_and_recall_at_defaults(tmp_path):
    bench = _bench()
    records, groups = bench.make_corpus(1500, dup_rate=0.15, seed=11)
    src = write_jsonl(tmp_path / "in.jsonl", records)
    result = dedupe_file(src, tmp_path / "out.jsonl", DedupeConfig())
    texts = [example_text(r["messages"]) for r in records]
    truth = bench.brute_force_pairs(texts, 0.8)
    found = bench.found_pairs(result.confirmed, result.exact_pairs, [r["id"] for r in records])
    precision, recall = bench.precision_recall(found, truth)
    assert len(truth) >= 150  # the planted copies are real near-duplicates
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, len(truth))
    # every planted group ends with exactly one survivor unless its edits went below 0.8
    kept = {r["id"] for r in read_jsonl(tmp_path / "out.jsonl")}
    ids = [r["id"] for r in records]
    collapsed = sum(1 for g in groups if sum(ids[i] in kept for i in g) == 1)
    assert collapsed >= 0.9 * len(groups)


def test_worker_processes_give_the_same_output(tmp_path):
    records, _ = _bench().make_corpus(900, dup_rate=0.2, seed=8)
    src = write_jsonl(tmp_path / "in.jsonl", records)
    one = dedupe_file(src, tmp_path / "one.jsonl", DedupeConfig(workers=1, batch_size=100))
    res = CliRunner().invoke(
        cli,
        ["dedupe", "--input", str(src), "--output", str(tmp_path / "two.jsonl"), "--workers", "2"],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "one.jsonl").read_text() == (tmp_path / "two.jsonl").read_text()
    assert one.near > 50


def test_brute_force_reference_agrees_with_python_sets():
    bench = _bench()
    rng = random.Random(5)
    texts = ["".join(rng.choice("abcde ") for _ in range(rng.randint(0, 40))) for _ in range(60)]
    texts += [t + "!" for t in texts[:20]]

    def jac(a, b):
        sa, sb = set(shingles(a)), set(shingles(b))
        return len(sa & sb) / len(sa | sb) if sa | sb else 1.0

    expected = {
        (i, j)
        for i in range(len(texts))
        for j in range(i + 1, len(texts))
        if jac(texts[i], texts[j]) >= 0.6
    }
    assert bench.brute_force_pairs(texts, 0.6) == expected


# -- nothing is lost ---------------------------------------------------------------------------
_TURNS = st.sampled_from(
    [
        "where is my order gl-48213",
        "where is my order gl-48214",
        "my monstera arrived broken",
        "how often should i water a fern",
        "sorry to hear that! i've sent a replacement that ships tomorrow.",
        "thanks for asking! water it when the top soil is dry.",
        "",
    ]
)
_RECORD = st.one_of(
    st.builds(
        lambda u, a, tail: chat(u + tail, a), _TURNS, _TURNS, st.sampled_from(["", "!", " ok"])
    ),
    st.just({"not": "a chat"}),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_RECORD, max_size=25), seeds=st.lists(_RECORD, max_size=4))
def test_every_input_line_ends_in_output_or_rejected_exactly_once(records, seeds):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        src = write_jsonl(d / "in.jsonl", records)
        seed_file = write_jsonl(d / "seeds.jsonl", [s for s in seeds if "messages" in s])
        result = dedupe_file(src, d / "out.jsonl", DedupeConfig(), seeds=seed_file)
        out = [json.loads(x) for x in (d / "out.jsonl").read_text().splitlines()]
        rejected = list(read_jsonl(d / "out.rejected.jsonl"))
        n_seeds = len([s for s in seeds if "messages" in s])
        assert len(out) + len(rejected) == len(records) + n_seeds
        # the input lines come out unchanged, in order, or are rejected with a reason
        non_seed_out = [o for o in out if o.get("meta", {}).get("source") != "seed"]
        rejected_inputs = [
            r["example"] for r in rejected if r["example"].get("meta", {}).get("source") != "seed"
        ]
        assert Counter(json.dumps(o, sort_keys=True) for o in non_seed_out + rejected_inputs) == (
            Counter(json.dumps(r, sort_keys=True) for r in records)
        )
        assert all(r["reason"] and r["stage"] == "dedupe" for r in rejected)
        assert result.kept == len(out)
        # no two kept examples are the same text
        texts = [example_text(o["messages"]) for o in out]
        assert len(set(texts)) == len(texts)


# -- the command in a run ----------------------------------------------------------------------
def _seeds_and_generated(tmp_path: Path):
    seeds = [
        chat(
            "My monstera arrived with two snapped leaves and soil everywhere in the box.",
            "Oh no, sorry about that! I've sent a free replacement that ships tomorrow; "
            "just keep the old one.",
        ),
        chat(
            "How often should I water my snake plant in winter?",
            "Great question! Water it about once a month in winter, when the soil is fully dry.",
        ),
    ]
    seed_file = write_jsonl(tmp_path / "seeds.jsonl", seeds)
    base = chat(
        "Hi, order GL-48213 still hasn't arrived and it was due on Monday. Can you check?",
        "Sorry for the wait! I've checked GL-48213: it left our Leeds hub on Tuesday and "
        "arrives tomorrow. You'll get the tracking link by email.",
    )
    near = chat(
        "Hi, order GL-48213 still hasn't arrived and it was due on Monday! Can you check?",
        "Sorry for the wait! I've checked GL-48213: it left our Leeds hub on Tuesday and "
        "arrives tomorrow. You'll get the tracking link by email.",
    )
    exact = chat(
        "hi,  order GL-48213 still hasn't arrived and it was due on monday. can you check?",
        base["messages"][2]["content"],
    )
    seed_copy = chat(
        "My monstera arrived with two snapped leaves and soil everywhere in the box!",
        seeds[0]["messages"][2]["content"],
    )
    other = chat(
        "Can I pause my plant-care subscription while I'm away in August?",
        "Of course! I've paused it for August and the next box goes out in September.",
    )
    generated = []
    for i, rec in enumerate([base, near, exact, seed_copy, other]):
        generated.append({"id": f"g{i}", "messages": rec["messages"], "meta": {"topic": "t"}})
    return seed_file, generated


def test_dedupe_command_in_a_run(make_run, tmp_path):
    seed_file, generated = _seeds_and_generated(tmp_path)
    run = make_run("shop", generated)
    run.update_manifest(inputs={"seeds": {"path": str(seed_file)}})
    res = CliRunner().invoke(cli, ["dedupe", "--run", str(run.path)])
    assert res.exit_code == 0, res.output
    assert "near-duplicates removed" in res.output and "kept" in res.output

    out = list(read_jsonl(run.file("deduped.jsonl")))
    assert [r["id"] for r in out if r["meta"].get("source") != "seed"] == ["g0", "g4"]
    assert sum(r["meta"].get("source") == "seed" for r in out) == 2
    rejected = {r["id"]: r for r in read_jsonl(run.file("rejected.jsonl"))}
    assert set(rejected) == {"g1", "g2", "g3"}
    assert rejected["g1"]["reason"].startswith("near-duplicate of g0 (jaccard 0.")
    assert rejected["g2"]["reason"] == "exact duplicate of g0"
    assert rejected["g3"]["reason"].startswith("near-copy of seed ")
    assert rejected["g3"]["example"]["id"] == "g3" and rejected["g3"]["stage"] == "dedupe"

    report = json.loads(run.file("dedupe_report.json").read_text())
    assert report["parameters"]["threshold"] == 0.8 and report["parameters"]["num_perm"] == 128
    assert report["lsh"]["bands"] * report["lsh"]["rows"] <= 128
    assert 0 < report["lsh"]["expected_false_negative_rate"] < 0.1
    clusters = {(c["kind"], c["kept"]): c for c in report["clusters"]}
    assert clusters["near", "g0"]["removed"] == ["g1"]
    assert clusters["exact", "g0"]["removed"] == ["g2"]
    assert clusters["near", report["largest_clusters"][0]["kept"]]["size"] == 2
    assert report["counts"]["kept"] == 4 and report["counts"]["removed"] == 3
    stage = run.stage("dedupe")
    assert stage["status"] == "done" and stage["kept"] == 4 and stage["removed"] == 3

    # a rerun replaces its rejections instead of listing them twice
    res = CliRunner().invoke(cli, ["dedupe", "--run", str(run.path), "--no-include-seeds"])
    assert res.exit_code == 0, res.output
    assert len(list(read_jsonl(run.file("rejected.jsonl")))) == 3
    out = list(read_jsonl(run.file("deduped.jsonl")))
    assert [r["id"] for r in out] == ["g0", "g4"]


def test_dedupe_without_generated_says_what_to_run(make_run):
    run = make_run("empty")
    res = CliRunner().invoke(cli, ["dedupe", "--run", str(run.path)])
    assert res.exit_code == 1
    assert res.output.strip().endswith("generated.jsonl: missing; run `distill generate` first")
    assert len(res.output.strip().splitlines()) == 1


def test_dedupe_bad_json_line_names_file_and_line(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(chat("a question here", "an answer there")) + "\n{oops\n")
    res = CliRunner().invoke(
        cli, ["dedupe", "--input", str(src), "--output", str(tmp_path / "o.jsonl")]
    )
    assert res.exit_code == 1
    assert f"{src}:2: invalid JSON" in res.output
    assert not (tmp_path / "o.jsonl").exists()


def test_a_failed_dedupe_leaves_the_previous_result_and_says_failed(make_run, tmp_path):
    _, generated = _seeds_and_generated(tmp_path)
    run = make_run("shop", generated)
    assert CliRunner().invoke(cli, ["dedupe", "--run", str(run.path)]).exit_code == 0
    before = run.file("deduped.jsonl").read_text(), run.file("rejected.jsonl").read_text()
    with open(run.file("generated.jsonl"), "a") as f:
        f.write("{broken\n")
    res = CliRunner().invoke(cli, ["dedupe", "--run", str(run.path)])
    assert res.exit_code == 1 and "generated.jsonl:6: invalid JSON" in res.output
    after = run.file("deduped.jsonl").read_text(), run.file("rejected.jsonl").read_text()
    assert after == before
    assert run.stage("dedupe")["status"] == "failed"


def test_standalone_mode_keeps_lines_as_they_are(tmp_path):
    recs = [
        chat("where is my order GL-11111 please", "Sorry! It ships today, here's the link."),
        chat("where is my order GL-11111 please", "Sorry! It ships today, here's the link."),
        {"text": "not a chat"},
        chat("how do I repot a fern", "Happy to help! Use a pot 2 cm wider and fresh soil."),
    ]
    src = write_jsonl(tmp_path / "data.jsonl", recs)
    out = tmp_path / "clean.jsonl"
    res = CliRunner().invoke(cli, ["dedupe", "--input", str(src), "--output", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [recs[0], recs[3]]
    rejected = list(read_jsonl(tmp_path / "clean.rejected.jsonl"))
    reasons = sorted(r["reason"].split(" (")[0].split(" of ")[0] for r in rejected)
    assert reasons == ["exact duplicate", "not a chat example"]
    assert (tmp_path / "clean.dedupe_report.json").exists()

    res = CliRunner().invoke(cli, ["dedupe", "--input", str(src)])
    assert res.exit_code == 2 and "--input and --output go together" in res.output


def test_removed_lines_go_where_the_help_says(tmp_path):
    help = " ".join(CliRunner().invoke(cli, ["dedupe", "--help"]).output.split())
    # the help's own example is what happens
    assert (
        "--output clean.jsonl also writes clean.rejected.jsonl and clean.dedupe_report.json" in help
    )
    same = chat("where is my order GL-11111 please", "Sorry! It ships today, here's the link.")
    src = write_jsonl(tmp_path / "data.jsonl", [same, same])
    out = tmp_path / "clean.jsonl"
    res = CliRunner().invoke(cli, ["dedupe", "--input", str(src), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clean.dedupe_report.json",
        "clean.jsonl",
        "clean.rejected.jsonl",
        "data.jsonl",
    ]
    [row] = read_jsonl(tmp_path / "clean.rejected.jsonl")
    assert row["reason"].startswith("exact duplicate of ")
    assert f"removed: {tmp_path / 'clean.rejected.jsonl'}" in res.output.replace("\n", "")


def test_a_chained_near_duplicate_names_its_neighbour_and_the_kept_one(tmp_path):
    base = (
        "My monstera arrived this morning with two snapped leaves, soil all over the box and "
        "a cracked nursery pot. The outer box looked fine, so it must have happened inside. "
        "Could you send a replacement, or should I try to save this one by repotting it? "
        "I have photos of the damage if that helps, and the order number is GL-48213."
    )
    x = " Also the card for my sister was missing from the parcel."
    y = " And please do not send it by the slow courier again, thanks."
    reply = "Oh no, sorry! I've sent a free replacement that ships tomorrow."
    a, b, c = (chat(u, reply, id=i) for u, i in ((base, "A"), (base + x, "B"), (base + x + y, "C")))
    sa, sb, sc = shingle_sets([example_text(r["messages"]) for r in (a, b, c)])

    def jac(p, q):
        return len(np.intersect1d(p, q)) / len(np.union1d(p, q))

    assert jac(sa, sb) >= 0.8 and jac(sb, sc) >= 0.8 and jac(sa, sc) < 0.8
    src = write_jsonl(tmp_path / "in.jsonl", [a, b, c])
    result = dedupe_file(src, tmp_path / "out.jsonl", DedupeConfig())
    assert result.kept == 1 and result.near == 2
    reasons = {r["id"]: r["reason"] for r in read_jsonl(tmp_path / "out.rejected.jsonl")}
    assert reasons["B"] == f"near-duplicate of A (jaccard {jac(sa, sb):.2f})"
    assert reasons["C"] == (
        f"near-duplicate of B (jaccard {jac(sb, sc):.2f}), in the cluster kept as A"
    )


def test_threshold_flag_changes_what_counts_as_a_duplicate(tmp_path):
    a = chat(
        "My order GL-12345 is late, it was due on Monday and nothing has arrived yet.",
        "Sorry for the wait! It left our hub on Tuesday and arrives tomorrow.",
    )
    b = chat(
        "My order GL-12345 is late, it was due on Friday and nothing has come yet.",
        "Sorry for the wait! It left our hub on Wednesday and arrives on Monday.",
    )
    src = write_jsonl(tmp_path / "in.jsonl", [a, b])
    ja = shingle_sets([example_text(a["messages"]), example_text(b["messages"])])
    exact = len(np.intersect1d(ja[0], ja[1])) / len(np.union1d(ja[0], ja[1]))
    assert 0.5 < exact < 0.8
    loose = dedupe_file(src, tmp_path / "loose.jsonl", DedupeConfig(threshold=0.5))
    strict = dedupe_file(src, tmp_path / "strict.jsonl", DedupeConfig())
    assert (loose.kept, strict.kept) == (1, 2)
    row = next(read_jsonl(tmp_path / "loose.rejected.jsonl"))
    assert f"(jaccard {exact:.2f})" in row["reason"]


# -- redis -------------------------------------------------------------------------------------
@contextmanager
def redis_server(password: str | None = None):
    """A real redis-server on a loopback ephemeral port, no persistence; yields (url, client)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (Debian: apt-get install redis-server)")
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if password:
        args += ["--requirepass", password]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not start")
        yield f"redis://127.0.0.1:{port}", client
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def redis_url():
    with redis_server() as server:
        yield server


def test_redis_lsh_storage_gives_the_same_result_and_cleans_up(tmp_path, redis_url):
    url, client = redis_url
    bench = _bench()
    records, _ = bench.make_corpus(300, dup_rate=0.2, seed=2)
    src = write_jsonl(tmp_path / "in.jsonl", records)
    mem = dedupe_file(src, tmp_path / "mem.jsonl", DedupeConfig())
    res = CliRunner().invoke(
        cli,
        [
            "dedupe",
            "--input",
            str(src),
            "--output",
            str(tmp_path / "red.jsonl"),
            "--lsh-storage",
            url,
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "red.jsonl").read_text() == (tmp_path / "mem.jsonl").read_text()
    assert mem.near > 10
    report = json.loads((tmp_path / "red.dedupe_report.json").read_text())
    assert report["parameters"]["lsh_storage"] == url
    assert client.dbsize() == 0  # the index keys were removed after the run


def test_redis_password_comes_from_the_environment(tmp_path, monkeypatch):
    src = write_jsonl(
        tmp_path / "in.jsonl", [chat("hello there friend", "hi! how can i help?")] * 2
    )
    with redis_server(password="s3cret-pw") as (url, client):
        out = tmp_path / "o.jsonl"
        args = ["dedupe", "--input", str(src), "--output", str(out), "--lsh-storage", url]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2 and "cannot use Redis" in res.output
        monkeypatch.setenv("REDIS_PASSWORD", "s3cret-pw")
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, res.output
        assert len(out.read_text().splitlines()) == 1
        assert "s3cret-pw" not in (tmp_path / "o.dedupe_report.json").read_text()
        assert client.dbsize() == 0


def test_unreachable_redis_is_one_line(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("hello there friend", "hi! how can i help?")])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = CliRunner().invoke(
        cli,
        [
            "dedupe",
            "--input",
            str(src),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--lsh-storage",
            f"redis://127.0.0.1:{port}",
        ],
    )
    assert res.exit_code == 2
    assert "cannot use Redis" in res.output and len(res.output.strip().splitlines()) == 1


def _log_everything(monkeypatch) -> None:
    """Every input counts as big and a log line is never held back: what a 1M-line run shows."""
    import distill.progress as progress

    monkeypatch.setattr(progress, "BIG_BYTES", 1)
    monkeypatch.setattr(progress, "BIG_COUNT", 1)
    monkeypatch.setattr(progress._Lines, "QUIET_S", 0.0)


def test_a_big_input_shows_progress_on_stderr_and_a_small_one_prints_nothing(tmp_path, monkeypatch):
    recs = [chat(f"where is order GL-{i:05d}", f"It ships today, order {i}.") for i in range(50)]
    src = write_jsonl(tmp_path / "data.jsonl", recs + recs[:5])
    args = ["dedupe", "--input", str(src), "--output", str(tmp_path / "clean.jsonl")]
    small = CliRunner().invoke(cli, args)
    assert small.exit_code == 0 and small.stderr == ""

    _log_everything(monkeypatch)
    big = CliRunner().invoke(cli, args)
    assert big.exit_code == 0 and big.stdout == small.stdout  # stdout stays the summary
    for step in ("dedupe: hashing", "dedupe: comparing", "dedupe: writing"):
        assert f"{step}: done, " in big.stderr, big.stderr
    assert "% (" in big.stderr and " MB of " in big.stderr


def test_split_of_many_examples_shows_progress_on_stderr(monkeypatch, capsys):
    from distill.stages.split import SplitConfig, split_examples

    recs = [
        {"id": f"x{i}", **chat(f"where is order GL-{i:05d}", f"It ships today, order {i}.")}
        for i in range(40)
    ]
    split_examples(recs, SplitConfig(eval_size=4))
    assert capsys.readouterr().err == ""
    _log_everything(monkeypatch)
    split_examples(recs, SplitConfig(eval_size=4))
    err = capsys.readouterr().err
    assert "shingle sets: done" in err and "MinHash signatures: done" in err, err
