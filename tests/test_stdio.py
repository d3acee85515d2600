"""``stdio.redirect_output``: fd-level redirection catches what Python, C-level writes and child
processes send to stdout (and stderr), and gives the terminal back afterwards. Run in a child
process of its own, whose fds 1 and 2 are real (pytest's capture replaces ``sys.stdout``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys
    from ets_async.stdio import redirect_output

    log, stderr = sys.argv[1], sys.argv[2] == "stderr"
    print("before", end=" ")  # still buffered when the block opens: stays on the terminal
    with redirect_output(log, stderr=stderr):
        print("python")
        os.write(1, b"fd\\n")
        subprocess.run([sys.executable, "-c", "print('child')"], check=True)
        print("err", file=sys.stderr, flush=True)
    print("after")
    """
)


def run(log, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(log), mode], capture_output=True, text=True, check=True)


def test_stdout_goes_to_the_file_from_python_c_and_children_and_comes_back(tmp_path):
    log = tmp_path / "out.log"
    done = run(log, "stdout")
    assert log.read_text() == "python\nfd\nchild\n"
    assert done.stdout == "before after\n" and done.stderr == "err\n"


def test_with_stderr_both_go_to_the_file_appended(tmp_path):
    log = tmp_path / "out.log"
    log.write_text("old\n")
    done = run(log, "stderr")
    assert log.read_text() == "old\npython\nfd\nchild\nerr\n"
    assert done.stdout == "before after\n" and done.stderr == ""
