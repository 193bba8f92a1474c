"""Demo characters (held-out Stage identities) and the built-in demo agent that answers users.

The demo agent needs no outside service: when the user stops talking it answers with a short
line spoken by the character's own synthetic voice (espeak-ng when installed, otherwise the
Stage world's formant synthesizer), pushed into the session exactly like a real agent's TTS.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from lpm.data.stage import HELDOUT_SEEDS, FrameState, make_character, render_frame
from lpm.data.stage.captions import describe_identity
from lpm.data.stage.character import Character
from lpm.data.stage.speech import resolve_backend, synthesize

log = logging.getLogger(__name__)

DEMO_SEEDS: tuple[int, ...] = tuple(HELDOUT_SEEDS[i] for i in (0, 1, 2, 3, 5, 8))
"""Held-out identities offered by the browser client (never seen in training)."""

REPLIES = (
    "I hear you. Tell me more about that.",
    "That is a really interesting point.",
    "Hmm, let me think about it for a second.",
    "Yes, I completely agree with you.",
    "Oh, I did not know that. How wonderful!",
)


@dataclass(frozen=True)
class DemoCharacter:
    """One pickable character."""

    id: str
    seed: int
    description: str

    @property
    def character(self) -> Character:
        return make_character(self.seed)


def demo_characters() -> list[DemoCharacter]:
    """The characters the server offers, in a stable order."""
    out = []
    for seed in DEMO_SEEDS:
        ch = make_character(seed)
        out.append(DemoCharacter(id=ch.name, seed=seed, description=describe_identity(ch)))
    return out


def find_character(character_id: str) -> DemoCharacter | None:
    return next((c for c in demo_characters() if c.id == character_id), None)


@functools.lru_cache(maxsize=64)
def character_image(seed: int, size: int) -> np.ndarray:
    """The character's neutral front portrait, size x size x 3 uint8 RGB."""
    img = render_frame(make_character(seed), FrameState(), size)
    img.setflags(write=False)
    return img


@functools.lru_cache(maxsize=64)
def character_png(seed: int, size: int = 256) -> bytes:
    """PNG bytes of `character_image` (for the browser's character picker)."""
    return cv2.imencode(".png", character_image(seed, size)[:, :, ::-1])[1].tobytes()


class DemoAgent:
    """Answers each finished user turn with one synthesized line.

    Fed the state of every generated chunk; a turn ends after ``pause_chunks`` non-listening
    chunks following at least one listening chunk.
    """

    def __init__(
        self,
        character: Character,
        sample_rate: int,
        speak: Callable[[np.ndarray], object],
        pause_chunks: int = 1,
    ) -> None:
        self.character, self.rate, self.speak = character, sample_rate, speak
        self.backend = resolve_backend("auto")
        self.pause_chunks = pause_chunks
        self._heard, self._quiet, self._turns = False, 0, 0
        self._busy = threading.Lock()

    def on_chunk(self, state: str) -> None:
        """Advance the turn detector by one chunk of state ``state``."""
        if state == "listening":
            self._heard, self._quiet = True, 0
        elif state == "responding":
            self._heard, self._quiet = False, 0
        elif self._heard:
            self._quiet += 1
            if self._quiet >= self.pause_chunks:
                self._heard = False
                self.say(REPLIES[self._turns % len(REPLIES)])
                self._turns += 1

    def say(self, text: str) -> None:
        """Synthesize ``text`` in a worker thread and hand the samples to ``speak``."""
        threading.Thread(target=self._say, args=(text,), daemon=True).start()

    def _say(self, text: str) -> None:
        with self._busy:
            try:
                audio = synthesize(text, self.character.voice, self.rate, backend=self.backend)
            except (RuntimeError, OSError, ValueError) as err:
                log.warning("demo agent could not synthesize speech: %s", err)
                return
            self.speak(np.asarray(audio, np.float32))
