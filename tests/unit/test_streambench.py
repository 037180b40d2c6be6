"""``bench stream --pin`` without services: the worker gets a core, the rest get the others, and get them back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streams.streambench import _pinned

needs_two = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or 0 not in os.sched_getaffinity(0),
                               reason="needs CPU 0 and another")


@needs_two
def test_pinning_gives_the_worker_cpu_0_and_puts_the_others_back():
    every = os.sched_getaffinity(0)
    code = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)"
    worker, service = (subprocess.Popen([sys.executable, "-c", code]) for _ in range(2))
    try:
        with _pinned(worker.pid, [service.pid]):
            assert os.sched_getaffinity(worker.pid) == {0}
            assert os.sched_getaffinity(service.pid) == every - {0}
            assert os.sched_getaffinity(0) == every - {0}  # this process too
            tasks = os.listdir(f"/proc/{service.pid}/task")
            assert len(tasks) >= 1 and all(os.sched_getaffinity(int(t)) == every - {0} for t in tasks)
        assert os.sched_getaffinity(service.pid) == every
        assert os.sched_getaffinity(0) == every
    finally:
        for p in (worker, service):
            p.kill()
            p.wait()
