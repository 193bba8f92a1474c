"""The Stage world: procedural cartoon characters in two-person conversations, with exact labels.

Layout (one concern per module):

    schema.py        vocabularies, identity splits, file names, SCHEMA_VERSION
    character.py     identity seed -> Character (looks, voice, temperament)
    state.py         FrameState: what changes from frame to frame
    pen.py           drawing primitives and head geometry
    face.py, hair.py facial features and expressions; hair, hats and ears
    render.py        render_frame / draw_character / backgrounds / contact sheets
    speech.py        espeak-ng or the built-in formant synthesizer
    conversation.py  two-party scripts with turns, pauses, backchannels, overlaps
    performance.py   audio + script -> per-frame FrameStates and labels
    captions.py      dense and per-sentence captions from the timelines
    clip.py          ClipSpec -> StageClip in memory (frames, labels, audio, references)
    writer.py        clip directories, resumable dataset builds with a manifest
    raw.py           raw multi-person footage with cleaning ground truth
"""

from lpm.data.stage.character import Character, make_character
from lpm.data.stage.clip import ClipSpec, StageClip, clip_spec_for, render_clip
from lpm.data.stage.render import FrameState, render_frame
from lpm.data.stage.schema import HELDOUT_SEEDS, SCHEMA_VERSION, TRAIN_SEEDS, split_of

__all__ = [
    "HELDOUT_SEEDS",
    "SCHEMA_VERSION",
    "TRAIN_SEEDS",
    "Character",
    "ClipSpec",
    "FrameState",
    "StageClip",
    "clip_spec_for",
    "make_character",
    "render_clip",
    "render_frame",
    "split_of",
]
