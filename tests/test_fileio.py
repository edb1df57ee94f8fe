"""vlabench.fileio: atomic writes and folder ownership."""

import json
import os
import subprocess
import sys

import pytest

from vlabench.fileio import (FolderBusyError, atomic_path, exclusive_folder, remove_orphan_temp_files,
                             write_json_atomic)


def test_atomic_path_publishes_on_success_and_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_path_no_clobber_refuses_existing(tmp_path):
    target = tmp_path / "s.h5"
    target.write_text("first")
    with pytest.raises(FileExistsError):
        with atomic_path(target, no_clobber=True) as tmp:
            tmp.write_text("second")
    assert target.read_text() == "first"


def test_only_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / ".x.json.999999.tmp"
    dead.write_text("left by a killed process")
    with atomic_path(tmp_path / "y.json") as live:
        live.write_text("being written")
        assert remove_orphan_temp_files(tmp_path.glob(".*.tmp*")) == [dead]
        assert live.exists() and not dead.exists()


def test_exclusive_folder_refuses_a_second_owner_and_names_it(tmp_path):
    code = ("import sys, time; from vlabench.fileio import exclusive_folder\n"
            "with exclusive_folder(sys.argv[1], 'collect test'):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=rf"collect test.*PID {proc.pid}"):
            with exclusive_folder(tmp_path, "second"):
                pass
    finally:
        proc.kill()
        proc.wait(30)
    # the kernel released the killed holder's lock: a rerun takes the folder
    with exclusive_folder(tmp_path, "rerun"):
        assert (tmp_path / ".owner.lock").read_text().startswith(f"{os.getpid()} rerun")
