"""``bench stream --pin`` without services: the worker gets a core, the rest get the others, and get them back."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from streams.bench.stream import _pinned

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


def test_cpu_time_splits_off_the_kernel_part():
    from pathlib import Path

    from streams.bench.stream import _cpu_s

    pid = os.getpid()
    all0, kernel0 = _cpu_s(pid), _cpu_s(pid, kernel=True)
    for _ in range(200_000):  # system calls: time in the kernel
        Path("/").stat()
    all1, kernel1 = _cpu_s(pid), _cpu_s(pid, kernel=True)
    assert 0 <= kernel0 <= all0 and 0 <= kernel1 <= all1
    assert kernel1 > kernel0
    assert all1 - all0 >= kernel1 - kernel0
    t = time.process_time()
    while time.process_time() - t < 0.3:  # pure Python: time in user space
        sum(range(1000))
    all2, kernel2 = _cpu_s(pid), _cpu_s(pid, kernel=True)
    assert (all2 - all1) - (kernel2 - kernel1) >= 0.2
    assert _cpu_s(2**22 + 12345) == 0.0  # a pid that does not exist
