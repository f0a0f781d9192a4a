"""One instance per process: made once here, made anew in a forked child."""

from __future__ import annotations

import os

from domain.platform.per_process import PerProcess


def test_made_once_per_process_and_anew_in_a_forked_child() -> None:
    holder: PerProcess[object] = PerProcess(object)
    assert holder.made() is None
    parent = holder.get()
    assert holder.get() is parent and holder.made() is parent

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's instance is not its own
        fresh = holder.made() is None
        child = holder.get()
        os.write(write_end, b"1" if fresh and child is not parent and holder.get() is child else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_end, 1) == b"1"
    assert holder.get() is parent
