"""Real-footage pipeline: raw videos in, single-person clips in the Stage clip schema out.

    config.py        typed configs of every stage (thresholds with units)
    media.py         defensive decoding of source videos (bad inputs become reasons)
    shots.py         1. shot boundaries (PySceneDetect), the 3-second floor
    detect.py        face backends: mediapipe (default), dlib; stage_faces.py for Stage renders
    filters.py       2. blur, flicker, picture-in-picture, subtitles, logo, people, colour
                     cast, framing (each with its reason)
    track.py         3. face tracks through a shot, crop boxes
    labels.py        4. speak / listen / idle by the decision table (VAD, mouth motion, sync)
    audio.py         5. speaker-only / listener-only tracks
    semantics.py     6. captions and the six-class semantic verifier
    refs.py          7. global, view and expression references
    rebalance.py     8. listener rebalancing
    pipeline.py      the per-video operator chain; write.py the clip writer
    runner.py        local process-pool runner (resumable, funnel table)
    ray_runner.py    Ray Data runner (optional `[ray]` extra)
    evaluate.py      scores against Stage raw scenes' ground truth

`lpm data prep --input DIR --out DIR` runs it; docs/prep.md describes it.
"""

from lpm.data.prep.config import PrepConfig, stage_config
from lpm.data.prep.pipeline import process_video
from lpm.data.prep.runner import run_local

__all__ = ["PrepConfig", "process_video", "run_local", "stage_config"]
