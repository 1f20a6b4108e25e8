"""codegen.hardware: how many threads a training job may take."""
import os
import subprocess
import sys

from codegen import hardware
from codegen.hardware import idle_cores, training_threads


def test_training_threads_passes_numbers_through_and_auto_takes_the_idle_cores(monkeypatch):
    assert training_threads(3) == 3 and training_threads(None) is None
    for idle, threads in [(1.95, 2), (2.0, 2), (1.5, 1), (0.2, 1), (7.93, 8)]:
        monkeypatch.setattr(hardware, "idle_cores", lambda idle=idle: idle)
        assert training_threads("auto") == threads, idle  # a half-busy core is not one to share


def test_idle_cores_sees_a_core_kept_busy():
    cores = os.cpu_count() or 1
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"])
    try:
        idle = idle_cores(window=1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.0 <= idle <= cores - 0.5, (idle, cores)
