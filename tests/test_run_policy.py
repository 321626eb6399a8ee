"""One run-folder policy for every job (``sj-qvm demo``, ``--digits``, both DVS pipelines, the
static pipeline): what a run writes, what ``--overwrite`` removes, another job's run refused, a
file as ``--out`` / ``--cache-dir`` refused up front in one line, and no writing through links."""
import json
import os

import pytest

from sj_qvm import atomic
from sj_qvm.app import cli, digits, pipeline, run_folder
from sj_qvm.app.static import CIFAR10_SPEC, CIFAR100_SPEC, main as static_main
from sj_qvm.app.static import pipeline as static_pipeline
from test_pipeline import TINY

DVS_RUN = {"results.json": '{"dataset": "dvs_gesture"}', "checkpoint.pt": "c",
           "checkpoint.pt.sha256": "d", "log.jsonl": '{"epoch": 1}\n',
           "conversion_report.png": "p", "accuracy_vs_T.png": "p"}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _no_work(monkeypatch):
    """Every job's work fails loudly if reached: the refusals must come before it."""
    def work(*a, **k):
        raise AssertionError("work started")
    monkeypatch.setattr(digits, "load_digits_tensors", work)
    monkeypatch.setattr(pipeline, "_release_root", work)
    monkeypatch.setattr(static_pipeline, "open_datasets", work)


def test_each_job_has_one_list_and_the_static_one_holds_its_tables_and_ablation_plot():
    assert set(run_folder.RUN_FILES) == {"dvs", "static", "digits"}
    assert {"tables.md", "v0_ablation.png"} <= set(run_folder.RUN_FILES["static"])
    for job, names in run_folder.RUN_FILES.items():
        assert len(set(names)) == len(names)
        assert set(run_folder.written_files("o", job)) <= {run_folder.Path("o") / n for n in names}


def test_digits_into_a_dvs_run_is_refused_and_overwrite_replaces_the_whole_run(tmp_path, capsys):
    out = tmp_path / "D"
    out.mkdir()
    for name, text in DVS_RUN.items():
        (out / name).write_text(text)
    (out / "notes.txt").write_text("mine")
    (out / "tables.md").write_text("my own tables")  # a static run's name: a run file
    argv = ["demo", "--digits", "--epochs", "0", "--quiet", "--out", str(out)]
    assert cli.main(argv) == 2
    err = _one_line(capsys)
    assert "already holds a run" in err and "results.json" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == DVS_RUN["results.json"]
    assert cli.main(argv + ["--overwrite"]) == 0
    # No DVS file is left to mix with the digits results; the user's other file stays.
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "results.json"]
    assert "snn_accuracy" in json.loads((out / "results.json").read_text())
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_into_another_jobs_run_is_refused(tmp_path, capsys):
    out = tmp_path / "D"
    out.mkdir()
    (out / "tables.md").write_text("a static run's tables")
    rc = pipeline.main(pipeline.DVS_GESTURE, TINY + ["--out", str(out), "--resume",
                                                     "--cache-dir", str(tmp_path / "syn")])
    assert rc == 2 and "another job's run (tables.md)" in _one_line(capsys)
    assert cli.main(["demo", "--digits", "--resume", "--out", str(out)]) == 2
    assert "--resume" in _one_line(capsys)


@pytest.mark.parametrize("job", ["digits", "dvs", "static"])
@pytest.mark.parametrize("where", ["out", "out_below_a_file", "cache_dir"])
def test_a_file_where_a_folder_belongs_is_refused_at_the_start_in_one_line(job, where, tmp_path,
                                                                           capsys, monkeypatch):
    if where == "cache_dir" and job != "dvs":
        pytest.skip("only the DVS jobs have --cache-dir")
    _no_work(monkeypatch)
    a_file = tmp_path / "FILE"
    a_file.write_text("not a folder")
    out = {"out": a_file, "out_below_a_file": a_file / "sub"}.get(where, tmp_path / "run")
    cache = a_file if where == "cache_dir" else tmp_path / "syn"
    if job == "digits":
        rc = cli.main(["demo", "--digits", "--quiet", "--out", str(out)])
    elif job == "dvs":
        rc = cli.main(["demo", "--quiet", "--out", str(out), "--cache-dir", str(cache)])
    else:
        rc = static_main((CIFAR100_SPEC, CIFAR10_SPEC), ["--root", str(tmp_path), "--dataset",
                         "cifar10", "--out", str(out), "--workers", "0"], prog="train.py")
    assert rc == 2
    err = _one_line(capsys)
    flag = "--cache-dir" if where == "cache_dir" else "--out"
    assert f"{flag} {cache if where == 'cache_dir' else out}" in err and "not a folder" in err
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("name", ["log.jsonl", "checkpoint.pt"])
def test_a_dangling_link_in_the_run_folder_is_never_written_through(name, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere" / name
    elsewhere.parent.mkdir()
    (out / name).symlink_to(elsewhere)  # dangling: exists() is False
    argv = TINY + ["--cache-dir", str(tmp_path / "syn"), "--out", str(out)]
    assert pipeline.main(pipeline.DVS_GESTURE, argv) == 2  # a fresh run: the folder holds a run
    assert name in _one_line(capsys)
    if name == "log.jsonl":  # no checkpoint: --resume would start afresh and append to the log
        assert pipeline.main(pipeline.DVS_GESTURE, argv + ["--resume"]) == 2
        assert "symbolic link" in _one_line(capsys)
    assert not elsewhere.exists()
    assert pipeline.main(pipeline.DVS_GESTURE, argv + ["--overwrite"]) == 0
    assert not elsewhere.exists() and not (out / name).is_symlink()
    assert sorted(p.name for p in out.iterdir()) == sorted(run_folder.RUN_FILES["dvs"])


def test_append_refuses_links_dangling_or_not(tmp_path):
    target = tmp_path / "target.txt"
    link = tmp_path / "log.jsonl"
    link.symlink_to(target)
    with pytest.raises(atomic.LinkError, match="log.jsonl"):
        atomic.append_bytes(link, b"row\n")
    assert not target.exists()
    target.write_text("keep")
    with pytest.raises(atomic.LinkError):
        run_folder.append_log(link, {"epoch": 1})
    assert target.read_text() == "keep"
    plain = tmp_path / "plain.jsonl"
    run_folder.append_log(plain, {"epoch": 1})
    run_folder.append_log(plain, {"epoch": 2})
    assert [json.loads(r)["epoch"] for r in plain.read_text().splitlines()] == [1, 2]


def test_overwrite_removes_a_link_itself_never_its_target(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    target = tmp_path / "precious.md"
    target.write_text("keep")
    (out / "tables.md").symlink_to(target)
    run_folder.check_fresh(out, "static", resume=False, overwrite=True)
    run_folder.prepare(out, "static", resume=False, overwrite=True)
    assert not os.path.lexists(out / "tables.md") and target.read_text() == "keep"
