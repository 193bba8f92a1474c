"""Generation, streaming and training import without PyAV: it is needed only to read or write
video files (and by the server, for WebRTC audio)."""

from __future__ import annotations

import subprocess
import sys


def test_streaming_and_training_import_without_pyav():
    code = (
        "import sys; sys.modules['av'] = None\n"  # any `import av` now raises ImportError
        "import lpm.inference, lpm.inference.streaming, lpm.train\n"
        "import lpm.media\n"
        "try:\n"
        "    lpm.media.read_video('clip.mp4')\n"
        "except ImportError:\n"
        "    print('reading a video needs av')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "reading a video needs av" in proc.stdout
