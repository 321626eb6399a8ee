"""Where the real recordings come from: $SJ_QVM_EVENTS_DIR, else ../shared/data/events beside the
checkout; a missing recording skips with a reason that names the variable."""

import pytest

import conftest

NAME = "dvs128_aedat2_neal_walking.aedat"


def test_the_variable_names_the_folder(tmp_path, monkeypatch):
    (tmp_path / NAME).write_bytes(b"")
    monkeypatch.setenv("SJ_QVM_EVENTS_DIR", str(tmp_path))
    assert conftest.events_file(NAME) == tmp_path / NAME


def test_unset_falls_back_to_the_shared_folder_beside_the_checkout(tmp_path, monkeypatch):
    (tmp_path / NAME).write_bytes(b"")
    monkeypatch.delenv("SJ_QVM_EVENTS_DIR", raising=False)
    monkeypatch.setattr(conftest, "EVENTS_DIR_DEFAULT", tmp_path)
    assert conftest.events_file(NAME) == tmp_path / NAME
    monkeypatch.setattr(conftest, "EVENTS_DIR_DEFAULT", tmp_path / "absent")
    with pytest.raises(pytest.skip.Exception, match=rf"{NAME} .*: set SJ_QVM_EVENTS_DIR to a folder that holds it"):
        conftest.events_file(NAME)


def test_a_folder_without_the_recording_skips_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SJ_QVM_EVENTS_DIR", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match=rf"{NAME} .*: {tmp_path} \(SJ_QVM_EVENTS_DIR\) does not hold it"):
        conftest.events_file(NAME)


def test_a_variable_that_names_no_folder_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SJ_QVM_EVENTS_DIR", str(tmp_path / "typo"))
    with pytest.raises(pytest.UsageError, match=r"SJ_QVM_EVENTS_DIR=.*typo' is not a folder"):
        conftest.events_file(NAME)
