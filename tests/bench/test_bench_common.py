"""A benchmark killed with SIGTERM (``pkill -f bench.``, a CI timeout) stops the broker it
started instead of leaving it running."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from streamtrain.paths import REPO_ROOT

SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import bench.common as common

    class FakeBroker:  # the plumbing under test is the signal's, not the broker's
        def __init__(self, config):
            self.config = config
        def start(self):
            pass
        def stop(self):
            Path(sys.argv[1]).write_text("stopped")

    common.LocalKafka = FakeBroker
    with common.kafka_for_bench(None):
        print("ready", flush=True)
        time.sleep(60)
""")


def test_sigterm_stops_the_benchmarks_broker(tmp_path) -> None:
    marker = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(marker)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert marker.read_text() == "stopped"
