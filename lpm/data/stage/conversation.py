"""Two-party conversation scripts with turn-taking, pauses, backchannels and overlaps.

Speaker 0 is the performer (the character on screen), speaker 1 the partner (only heard). A
`Conversation` holds the timed utterances and renders one audio track per speaker plus the mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpm.data.stage.character import Character
from lpm.data.stage.speech import resolve_backend, synthesize

MODES = ("conversation", "speak", "listen", "idle")
"""Clip modes: balanced dialogue, mostly the performer, mostly the partner, mostly silence."""
MODE_WEIGHTS = (0.45, 0.2, 0.25, 0.1)

BACKCHANNELS = ("mm-hm", "yeah", "right", "uh-huh", "I see", "okay", "oh really", "wow", "sure")

_SUBJECTS = (
    "the weather",
    "my sister",
    "the new cafe",
    "that movie",
    "our project",
    "the train",
    "your garden",
    "the concert",
    "this book",
    "the meeting",
    "my neighbour",
    "the beach",
    "the old bridge",
    "our trip",
    "the museum",
    "that song",
    "the market",
    "my bike",
)
_ADJECTIVES = (
    "lovely",
    "strange",
    "wonderful",
    "terrible",
    "quiet",
    "amazing",
    "boring",
    "surprising",
    "funny",
    "expensive",
    "perfect",
    "exhausting",
    "beautiful",
)
_VERBS = ("visit", "try", "finish", "watch", "fix", "plan", "paint", "cook", "read", "call")
_TIMES = (
    "tomorrow",
    "next week",
    "tonight",
    "on Sunday",
    "this summer",
    "later today",
    "after lunch",
    "in the morning",
)
_TEMPLATES = (
    "I think {s} is {a}.",
    "Did you see {s} {t}?",
    "We should {v} something {t}.",
    "Honestly, {s} was {a}, and I loved it.",
    "Do you remember {s}?",
    "I want to {v} {s} {t}.",
    "That sounds {a} to me.",
    "Well, {s} looked {a} when I passed by.",
    "Maybe we can {v} it {t}.",
    "Have you ever tried to {v} {s}?",
    "No, I told you, {s} is really {a}!",
    "So what do you think about {s}?",
    "It was {a}, really {a}.",
    "Let me tell you about {s}.",
)


@dataclass(frozen=True, kw_only=True)
class Utterance:
    """One timed utterance of one speaker (times in seconds from the session start)."""

    speaker: int
    """0 = performer, 1 = partner."""
    start_s: float
    text: str
    kind: str
    """`sentence` or `backchannel`."""
    audio: np.ndarray
    """float32 mono samples at the conversation's sample rate."""
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(kw_only=True)
class Conversation:
    """A timed two-party script over a session of `duration_s` seconds."""

    utterances: list[Utterance]
    duration_s: float
    sample_rate: int
    mode: str
    backend: str

    def track(self, speaker: int) -> np.ndarray:
        """One speaker's audio over the whole session (float32, `sample_rate` Hz)."""
        n = int(round(self.duration_s * self.sample_rate))
        out = np.zeros(n, np.float32)
        for u in self.utterances:
            if u.speaker != speaker:
                continue
            i0 = int(round(u.start_s * self.sample_rate))
            if i0 >= n:
                continue
            seg = u.audio[: n - i0]
            out[i0 : i0 + len(seg)] += seg
        return out

    def mix(self) -> np.ndarray:
        """Both speakers summed (float32, clipped to [-1, 1])."""
        return np.clip(self.track(0) + self.track(1), -1.0, 1.0)

    def script(self) -> list[dict]:
        """JSON-ready list of utterances (no audio)."""
        return [
            {
                "speaker": u.speaker,
                "start_s": round(u.start_s, 4),
                "end_s": round(u.end_s, 4),
                "text": u.text,
                "kind": u.kind,
            }
            for u in self.utterances
        ]


def make_sentence(rng: np.random.Generator) -> str:
    """A random short English sentence from templates."""
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    pick = lambda seq: seq[int(rng.integers(len(seq)))]
    return template.format(s=pick(_SUBJECTS), a=pick(_ADJECTIVES), v=pick(_VERBS), t=pick(_TIMES))


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """Probabilities that shape one mode's script."""

    p_performer_turn: float
    max_sentences: tuple[int, int]
    p_backchannel: float
    p_long_pause: float


_PLANS = {
    "conversation": _Plan(
        p_performer_turn=0.5, max_sentences=(1, 3), p_backchannel=0.45, p_long_pause=0.1
    ),
    "speak": _Plan(
        p_performer_turn=0.85, max_sentences=(2, 4), p_backchannel=0.5, p_long_pause=0.08
    ),
    "listen": _Plan(
        p_performer_turn=0.15, max_sentences=(2, 4), p_backchannel=0.5, p_long_pause=0.08
    ),
    "idle": _Plan(p_performer_turn=0.5, max_sentences=(1, 1), p_backchannel=0.1, p_long_pause=0.9),
}


def make_conversation(
    performer: Character,
    partner: Character,
    duration_s: float,
    rng: np.random.Generator,
    mode: str = "conversation",
    sample_rate: int = 16_000,
    backend: str = "auto",
) -> Conversation:
    """Write and voice a conversation between the performer (speaker 0) and the partner (1).

    Turns alternate with gaps of 0.2-1.2 s, sometimes overlapping the previous turn by up to
    0.4 s; the listener backchannels at sentence ends; long pauses (1.5-4 s) give idle stretches.

    Args:
        duration_s: session length (seconds); utterances may be cut at the end.
        mode: one of `MODES`.
        backend: speech backend (see `speech.synthesize`).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    backend = resolve_backend(backend)
    plan = _PLANS[mode]
    voices = (performer.voice, partner.voice)
    utterances: list[Utterance] = []

    def say(speaker: int, start: float, text: str, kind: str) -> Utterance:
        audio = synthesize(
            text, voices[speaker], sample_rate, backend, seed=int(rng.integers(1 << 30))
        )
        u = Utterance(
            speaker=speaker,
            start_s=start,
            text=text,
            kind=kind,
            audio=audio,
            sample_rate=sample_rate,
        )
        utterances.append(u)
        return u

    t = float(rng.uniform(0.0, 0.8))
    last_speaker = int(rng.integers(2))
    while t < duration_s:
        if rng.random() < plan.p_long_pause:
            t += float(rng.uniform(1.5, 4.0))
            if t >= duration_s:
                break
        if mode == "conversation":
            speaker = 1 - last_speaker if rng.random() < 0.85 else last_speaker
        else:
            speaker = 0 if rng.random() < plan.p_performer_turn else 1
        n_sent = int(rng.integers(plan.max_sentences[0], plan.max_sentences[1] + 1))
        for _ in range(n_sent):
            if t >= duration_s:
                break
            u = say(speaker, t, make_sentence(rng), "sentence")
            t = u.end_s
            if rng.random() < plan.p_backchannel and t < duration_s:
                bc_start = t + float(rng.uniform(-0.25, 0.35))
                say(
                    1 - speaker,
                    max(0.0, bc_start),
                    BACKCHANNELS[int(rng.integers(len(BACKCHANNELS)))],
                    "backchannel",
                )
            t += float(rng.uniform(0.15, 0.45))
        last_speaker = speaker
        gap = (
            float(rng.uniform(-0.4, -0.1)) if rng.random() < 0.15 else float(rng.uniform(0.2, 1.2))
        )
        t = max(t + gap, 0.0)
    utterances.sort(key=lambda u: (u.start_s, u.speaker))
    return Conversation(
        utterances=utterances,
        duration_s=duration_s,
        sample_rate=sample_rate,
        mode=mode,
        backend=backend,
    )
