"""`distill run` drives the stage library with each stage's settings: its own flags, the
DISTILL_* environment and distill.toml combine as documented; a rerun skips what is current.
The stages are replaced by recorders, so these tests check the wiring, not the stages."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import SEEDS, STYLE

import distill.commands.run as run_cmd
from distill.cli import _default_map, cli
from distill.runs import Run, atomic_write_jsonl
from distill.stages import review as rv

STAGE_NAMES = ("generate", "dedupe", "split", "train", "eval")
RECORDS = [
    {
        "id": f"{i:016x}",
        "messages": [
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ],
        "meta": {},
    }
    for i in range(6)
]


@pytest.fixture
def calls(monkeypatch) -> list[tuple[str, dict]]:
    """Each stage records its options and writes what the real one would leave behind."""
    seen: list[tuple[str, dict]] = []

    def fake(stage: str):
        def runner(run_dir, opts):
            seen.append((stage, dict(opts)))
            run = Run.create(opts["name"]) if stage == "generate" else Run.open(run_dir)
            if stage == "generate":
                atomic_write_jsonl(run.file("generated.jsonl"), RECORDS)
            elif stage == "dedupe":
                atomic_write_jsonl(run.file("deduped.jsonl"), RECORDS)
            elif stage == "split":
                decisions = rv.load_decisions(run)
                kept = [
                    r for r in RECORDS if decisions.get(r["id"], {}).get("decision") != "reject"
                ]
                for name, part in (("train", kept[:-2]), ("eval", kept[-2:])):
                    atomic_write_jsonl(run.file(f"{name}.jsonl"), part)
                    atomic_write_jsonl(
                        run.file(f"{name}_ids.jsonl"), [{"id": r["id"], "meta": {}} for r in part]
                    )
            run.record_stage(stage, "done")

        return runner

    for stage in STAGE_NAMES:
        monkeypatch.setitem(run_cmd.STAGE_RUNNERS, stage, fake(stage))
    return seen


@pytest.fixture
def seeds(tmp_path):
    (tmp_path / "shop.jsonl").write_text(SEEDS.read_text())
    (tmp_path / "shop.style.toml").write_text(STYLE.read_text())
    return "shop.jsonl"


def distill_run(*args: str, env: dict[str, str] | None = None):
    """As `distill run ...` from a shell: distill.toml and DISTILL_* apply."""
    return CliRunner().invoke(
        cli,
        ["run", *args],
        env=env,
        auto_envvar_prefix="DISTILL",
        default_map=_default_map(),
    )


def opts_of(calls, stage: str) -> dict:
    return [o for s, o in calls if s == stage][-1]


def test_stage_tables_of_distill_toml_apply_to_run(tmp_path, calls, seeds):
    (tmp_path / "distill.toml").write_text(
        "[generate]\nn = 7\ntemperature = 0.3\n"
        "[dedupe]\nthreshold = 0.7\n"
        "[split]\neval-size = '5'\n"
        "[train]\nlr = 0.001\nepochs = 2\nrequire_review = true\n"
        "[eval]\nlimit = 4\n"
    )
    r = distill_run("--seeds", seeds)
    assert r.exit_code == 0, r.output
    assert [s for s, _ in calls] == list(STAGE_NAMES)
    assert opts_of(calls, "generate")["n"] == 7
    assert opts_of(calls, "generate")["temperature"] == 0.3
    assert opts_of(calls, "dedupe")["threshold"] == 0.7
    assert opts_of(calls, "split")["eval_size"] == "5"
    assert opts_of(calls, "train")["lr"] == 0.001 and opts_of(calls, "train")["epochs"] == 2
    assert opts_of(calls, "train")["require_review"] is True
    assert opts_of(calls, "eval")["limit"] == 4


@pytest.mark.parametrize(
    "toml, env, flags, n",
    [
        ("[generate]\nn = 7\n", {}, [], 7),
        ("[generate]\nn = 7\n[run]\nn = 11\n", {}, [], 11),  # same layer: run's own table
        ("[run]\nn = 11\n", {"DISTILL_GENERATE_N": "9"}, [], 9),  # env beats the file
        ("", {"DISTILL_GENERATE_N": "9", "DISTILL_RUN_N": "13"}, [], 13),
        ("[run]\nn = 11\n", {"DISTILL_RUN_N": "13"}, ["--n", "5"], 5),  # a flag beats all
        ("", {}, [], run_cmd.EMBEDDED_N),  # nobody chose: sized for the embedded teacher
        ("[generate]\nteacher = 'openai:gpt-4o'\n", {}, [], run_cmd.HOSTED_N),
    ],
)
def test_precedence_of_flags_environment_and_tables(tmp_path, calls, seeds, toml, env, flags, n):
    (tmp_path / "distill.toml").write_text(toml)
    r = distill_run("--seeds", seeds, *flags, env=env)
    assert r.exit_code == 0, r.output
    assert opts_of(calls, "generate")["n"] == n


def test_run_seed_reaches_every_stage_that_has_one(tmp_path, calls, seeds):
    (tmp_path / "distill.toml").write_text("[run]\nseed = 3\n[split]\nseed = 4\n")
    assert distill_run("--seeds", seeds).exit_code == 0
    assert [opts_of(calls, s)["seed"] for s in ("generate", "split", "train")] == [3, 3, 3]


def test_a_typo_in_the_run_table_is_one_line(tmp_path, seeds):
    import subprocess
    import sys

    (tmp_path / "distill.toml").write_text("[run]\nnn = 3\n")
    r = subprocess.run(
        [sys.executable, "-m", "distill", "run", "--seeds", seeds],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "distill.toml: [run] nn: unknown key" in r.stderr


def test_rerun_skips_current_stages_and_a_stage_setting_redoes_what_follows(tmp_path, calls, seeds):
    assert distill_run("--seeds", seeds).exit_code == 0
    calls.clear()
    again = distill_run("--seeds", seeds)
    assert again.exit_code == 0, again.output
    assert again.stderr.count("up to date, skipped") == 5 and calls == []
    (tmp_path / "distill.toml").write_text("[train]\nlr = 0.001\n")
    changed = distill_run("--seeds", seeds)
    assert changed.exit_code == 0, changed.output
    assert [s for s, _ in calls] == ["train", "eval"]
    assert "Done: " in changed.stdout


def test_run_says_when_review_decisions_are_newer_and_applies_them(calls, seeds):
    assert distill_run("--seeds", seeds).exit_code == 0
    run = Run.open()
    rv.record_decision(run, RECORDS[0]["id"], "reject", "rude")
    calls.clear()
    r = distill_run("--seeds", seeds)
    assert r.exit_code == 0, r.output
    text = " ".join(r.stderr.split())
    assert "1 rejected and 0 edited examples are not applied yet" in text
    assert [s for s, _ in calls] == ["split", "train", "eval"]
    assert RECORDS[0]["id"] not in [x["id"] for x in rv.read_jsonl(run.file("train_ids.jsonl"))]


def test_run_picks_the_student_from_the_teacher_and_says_so(calls, seeds):
    r = distill_run("--seeds", seeds)
    assert opts_of(calls, "train")["student"] == "local:smollm2-135m"
    assert "student: local:smollm2-135m (the teacher local:smollm2-135m runs locally" in r.stderr
    calls.clear()
    r = distill_run("--seeds", seeds, "--teacher", "openai:gpt-4o", "--name", "hosted")
    assert opts_of(calls, "train")["student"] == "gpt-4o-mini"
    r = distill_run("--seeds", seeds, "--student", "local:/models/x", "--name", "mine")
    assert opts_of(calls, "train")["student"] == "local:/models/x"
    assert "student:" not in r.stderr


# -- distill train's default student -------------------------------------------------------
@pytest.fixture
def trained(monkeypatch) -> list[tuple[str, str]]:
    import distill.stages.train_hosted
    import distill.stages.train_local

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        distill.stages.train_local,
        "train_local",
        lambda run, name, **o: seen.append(("local", name)),
    )
    monkeypatch.setattr(
        distill.stages.train_hosted,
        "train_hosted",
        lambda run, name, **o: seen.append(("hosted", name)),
    )
    return seen


@pytest.mark.parametrize(
    "teacher, base_url, kind, student, why",
    [
        (
            "openai:gpt-4o",
            None,
            "hosted",
            "gpt-4o-mini",
            "the teacher openai:gpt-4o is hosted by OpenAI",
        ),
        ("local:smollm2-135m", None, "local", "smollm2-135m", "runs locally"),
        ("ollama:llama3.1:8b", None, "local", "smollm2-135m", "runs locally"),
        ("openai:qwen", "http://127.0.0.1:8000/v1", "local", "smollm2-135m", "not OpenAI"),
    ],
)
def test_train_student_follows_the_teacher(
    make_run, trained, teacher, base_url, kind, student, why
):
    run = make_run("t", train__jsonl=RECORDS, eval__jsonl=RECORDS)
    run.update_manifest(config={"teacher": teacher, "generate": {"base_url": base_url}})
    r = CliRunner().invoke(cli, ["train", "--run", str(run.path)])
    assert r.exit_code == 0, r.output
    assert trained == [(kind, student)]
    first = r.stderr.splitlines()[0]
    assert first.startswith("student: ") and why in first and "--student" in first


def test_train_toml_student_is_a_choice_not_a_default(tmp_path, make_run, trained):
    run = make_run("t", train__jsonl=RECORDS, eval__jsonl=RECORDS)
    run.update_manifest(config={"teacher": "openai:gpt-4o"})
    (tmp_path / "distill.toml").write_text("[train]\nstudent = 'local:/models/mine'\n")
    r = CliRunner().invoke(
        cli,
        ["train", "--run", str(run.path)],
        auto_envvar_prefix="DISTILL",
        default_map=_default_map(),
    )
    assert r.exit_code == 0, r.output
    assert trained == [("local", "/models/mine")] and "student:" not in r.stderr


def test_run_rounds_drives_improve_with_its_table_and_skips_rounds_done(
    tmp_path, calls, seeds, monkeypatch
):
    import distill.commands.improve as improve_cmd
    from distill.stages.improve import ImproveOptions

    rounds: list[ImproveOptions] = []

    def fake_round(run, opts):
        rounds.append(ImproveOptions(**opts))  # the options improve itself takes
        done = (run.manifest.get("improve") or {}).get("rounds") or []
        run.update_manifest(improve={"rounds": [*done, {"round": len(done) + 1}]})

    monkeypatch.setattr(improve_cmd, "improve_and_print", fake_round)
    (tmp_path / "distill.toml").write_text("[improve]\ncells = 2\ncontrol = true\n")
    r = distill_run("--seeds", seeds, "--rounds", "2", "--probe-size", "50")
    assert r.exit_code == 0, r.output
    assert len(rounds) == 2
    assert all(o.cells == 2 and o.control and o.probe_size == 50 for o in rounds)
    assert "[improve 2/2] improve ..." in r.output

    again = distill_run("--seeds", seeds, "--rounds", "2", "--probe-size", "50")
    assert again.exit_code == 0, again.output
    assert len(rounds) == 2 and "2 round(s) done already, skipped" in again.output
    bad = distill_run("--seeds", seeds, "--rounds", "-1")
    assert bad.exit_code != 0 and "--rounds must be 0 or more" in bad.output
