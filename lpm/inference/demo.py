"""The demo `lpm generate` renders when it is given no inputs.

The package ships, under ``lpm/assets/demo/``, a held-out Stage character (one it never saw in
training), 8 s of a conversation in which it speaks and then listens to its partner, and a
timed script of what it does. `write_demo_assets` regenerates those files deterministically
from the Stage world::

    python -m lpm.inference.demo lpm/assets/demo
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo"
DEMO_SECONDS = 8.0
#: (suite seed, case index) of the held-out Stage conversation the demo is cut from.
DEMO_CASE = (2026, 3)


@dataclass(frozen=True)
class DemoInputs:
    image: Path
    speak: Path
    listen: Path
    script: Path


def demo_inputs(root: Path = DEMO_DIR) -> DemoInputs:
    """Paths of the shipped demo inputs; a clear error when the package lacks them."""
    d = DemoInputs(root / "character.png", root / "speak.wav", root / "listen.wav",
                   root / "script.json")  # fmt: skip
    missing = [str(p) for p in (d.image, d.speak, d.listen, d.script) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"this lpm build ships no demo inputs (missing {missing}); give --image and audio"
        )
    return d


def write_demo_assets(out: Path, *, size: int = 64) -> DemoInputs:
    """Render the demo case with the Stage world and write its inputs into ``out``."""
    import soundfile as sf

    from lpm.bench.materialize import materialize
    from lpm.bench.suites import _with_duration, stage_case

    seed, index = DEMO_CASE
    case = _with_duration(stage_case(seed, index, "conversation", size=size), DEMO_SECONDS)
    work = Path(out) / ".render"
    inputs = materialize(case, Path("."), work)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    import cv2

    cv2.imwrite(str(out / "character.png"), cv2.cvtColor(inputs.first_frame, cv2.COLOR_RGB2BGR))
    for name, wave in (("speak", inputs.speak), ("listen", inputs.listen)):
        sf.write(out / f"{name}.wav", wave, inputs.sample_rate, subtype="PCM_16")
    script = [
        {"start": round(i.start_s, 2), "end": round(min(i.end_s, DEMO_SECONDS), 2), "text": i.text}
        for i in inputs.case.instructions
        if i.start_s < DEMO_SECONDS and i.action is None and i.expression is None
    ]
    (out / "script.json").write_text(json.dumps(script, indent=1) + "\n")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return demo_inputs(out)


if __name__ == "__main__":
    print(write_demo_assets(Path(sys.argv[1] if len(sys.argv) > 1 else DEMO_DIR)))
