"""Captions written from a clip's timelines: dense (per fixed-length window) and per sentence.

Every caption opens with the performer's time-invariant traits, then says what the performer does
in the span: speaking, listening or silent; the dominant expression; the actions, in order. Each
action and expression has several phrasings, chosen by a seeded generator, so a text encoder
cannot key on one fixed string. Speech content is never put into captions.

Cues are short timed captions: one per run of frames in which the performer does the same action
and shows the same (non-neutral) expression, in the words a script's timed instruction uses
(``<traits> nods.``, ``<traits>, smiling.``). They teach a model *when* a request applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpm.data.stage.character import Character
from lpm.data.stage.conversation import Conversation
from lpm.data.stage.performance import Performance
from lpm.data.stage.schema import ACTIONS, EXPRESSIONS, STATES

DENSE_WINDOW_FRAMES = 125
"""Length of a dense-caption window (frames): one text prompt per 125-frame segment."""

ACTION_PHRASES: dict[str, tuple[str, ...]] = {
    "nod": ("nods", "nods its head", "gives a small nod", "nods in agreement"),
    "shake_head": ("shakes its head", "shakes its head no", "turns its head side to side"),
    "turn_left": ("turns its head to the left", "looks to the left", "glances left"),
    "turn_right": ("turns its head to the right", "looks to the right", "glances right"),
    "look_up": ("looks up", "raises its gaze upward", "tilts its head up"),
    "lean_in": ("leans in", "leans toward the camera", "moves closer"),
    "raise_eyebrows": ("raises its eyebrows", "lifts its brows", "arches its eyebrows"),
    "wave": ("waves", "waves its hand", "gives a friendly wave", "raises a hand and waves"),
}
"""Caption vocabulary: several phrasings per action (keys are `schema.ACTIONS[1:]`)."""

EXPRESSION_PHRASES: dict[str, tuple[str, ...]] = {
    "neutral": ("with a neutral face", "calmly", "with a relaxed expression"),
    "happy": ("smiling", "looking happy", "with a cheerful smile"),
    "sad": ("looking sad", "with a sorrowful face", "looking downcast"),
    "angry": ("looking angry", "frowning angrily", "with an annoyed scowl"),
    "surprised": ("looking surprised", "with wide, surprised eyes", "in astonishment"),
    "disgusted": ("looking disgusted", "wrinkling its face in disgust", "with a grimace"),
    "fearful": ("looking afraid", "with a fearful face", "looking anxious"),
    "thinking": ("looking thoughtful", "deep in thought", "pondering"),
}

STATE_PHRASES: dict[str, tuple[str, ...]] = {
    "speak": ("speaks", "is talking", "says something"),
    "listen": ("listens", "is listening to someone", "listens attentively"),
    "idle": ("stays silent", "waits quietly", "idles without speaking"),
}

_COLOUR_NAMES = {
    "black": (25, 25, 25),
    "dark brown": (70, 44, 26),
    "brown": (130, 80, 45),
    "blond": (225, 195, 120),
    "sand": (225, 200, 130),
    "red": (200, 50, 40),
    "grey": (150, 150, 150),
    "white": (240, 240, 240),
    "blue": (50, 80, 200),
    "pink": (230, 100, 160),
    "green": (70, 170, 80),
    "purple": (140, 60, 170),
    "orange": (235, 140, 40),
    "yellow": (235, 220, 60),
    "teal": (40, 160, 160),
    "beige": (220, 200, 160),
    "navy": (30, 40, 100),
    "olive": (120, 130, 50),
    "lavender": (190, 160, 230),
}


_PATTERN_WORDS = {
    "plain": "",
    "stripes": " striped",
    "dots": " polka-dot",
    "collar": " collared",
    "vneck": " v-neck",
    "two_tone": " two-tone",
    "checker": " checked",
}


def colour_name(rgb: tuple[int, int, int], hair: bool = False) -> str:
    """Nearest of a small set of colour names (`blond` only for hair)."""
    c = np.asarray(rgb, float)
    names = [k for k in _COLOUR_NAMES if hair or k != "blond"]
    d = [float(np.sum((c - np.asarray(_COLOUR_NAMES[k], float)) ** 2)) for k in names]
    return names[int(np.argmin(d))]


def _skin_word(rgb: tuple[int, int, int]) -> str:
    r, g, b = rgb
    if g > r or b > r:
        return colour_name(rgb) + "-skinned"
    lum = 0.3 * r + 0.59 * g + 0.11 * b
    return "light-skinned" if lum > 190 else "medium-skinned" if lum > 120 else "dark-skinned"


def describe_identity(ch: Character) -> str:
    """One sentence of time-invariant traits (appearance and background)."""
    hair = (
        "a bald head"
        if ch.hair_style == "bald"
        else f"{colour_name(ch.hair_colour, hair=True)} {ch.hair_style.replace('_', ' ')} hair"
    )
    extras = []
    if ch.glasses != "none":
        extras.append(f"{ch.glasses} glasses")
    if ch.hat != "none":
        extras.append(
            f"{_article(colour_name(ch.hat_colour))} {colour_name(ch.hat_colour)} {ch.hat}"
        )
    if ch.facial_hair != "none":
        extras.append(f"a {ch.facial_hair}")
    if ch.earrings:
        extras.append("earrings")
    pattern = _PATTERN_WORDS[ch.clothing_pattern]
    extra = (", " + ", ".join(extras)) if extras else ""
    top = f"{colour_name(ch.clothing)}{pattern} top"
    return (
        f"A {_skin_word(ch.skin)} cartoon character with {hair}, "
        f"{colour_name(ch.eye_colour)} eyes{extra}, wearing {_article(top)} {top}, "
        f"in front of {_article(colour_name(ch.background))} {colour_name(ch.background)} "
        "background."
    )


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


@dataclass(frozen=True, kw_only=True)
class CaptionSpan:
    """A caption of frames [start_frame, end_frame) of a clip."""

    start_frame: int
    end_frame: int
    text: str
    state: str
    """Dominant state in the span (`schema.STATES`)."""
    speaker: int = -1
    """For sentence spans: who speaks the sentence (0 performer, 1 partner, -1 nobody)."""


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _describe_span(
    perf: Performance, start: int, stop: int, rng: np.random.Generator, identity: str
) -> tuple[str, str]:
    states = perf.state[start:stop]
    counts = np.bincount(states, minlength=len(STATES))
    order = [STATES[i] for i in np.argsort(-counts) if counts[i] >= 0.2 * (stop - start)]
    state = order[0] if order else STATES[int(np.argmax(counts))]
    verbs = [_pick(rng, STATE_PHRASES[s]) for s in order[:2]] or [_pick(rng, STATE_PHRASES[state])]
    strong = perf.intensity[start:stop] > 0.35
    expr_ids = perf.expression[start:stop][strong]
    expr = EXPRESSIONS[int(np.bincount(expr_ids).argmax())] if expr_ids.size else "neutral"
    how = _pick(rng, EXPRESSION_PHRASES[expr])
    text = f"{identity} The character {' and then '.join(verbs)} {how}."
    actions: list[str] = []
    last = 0
    for a in perf.action[start:stop]:
        if a != last and a != 0:
            actions.append(_pick(rng, ACTION_PHRASES[ACTIONS[int(a)]]))
        last = a
    if actions:
        joined = actions[0] if len(actions) == 1 else ", then ".join(actions)
        text += f" It {joined}."
    return text, state


def dense_captions(
    ch: Character,
    perf: Performance,
    start: int,
    stop: int,
    rng: np.random.Generator,
    window: int = DENSE_WINDOW_FRAMES,
) -> list[CaptionSpan]:
    """Captions for consecutive `window`-frame spans of session frames [start, stop).

    Frame numbers in the result are relative to `start` (clip frames).
    """
    if window <= 0:
        raise ValueError(f"window must be a positive number of frames, got {window}")
    identity = describe_identity(ch)
    out = []
    for s in range(start, stop, window):
        e = min(stop, s + window)
        text, state = _describe_span(perf, s, e, rng, identity)
        out.append(CaptionSpan(start_frame=s - start, end_frame=e - start, text=text, state=state))
    return out


def sentence_captions(
    ch: Character,
    perf: Performance,
    conv: Conversation,
    start: int,
    stop: int,
    rng: np.random.Generator,
) -> list[CaptionSpan]:
    """Captions for sentence-bounded segments of session frames [start, stop).

    Segment boundaries are the start and end frames of every sentence (either speaker) inside
    the span; the stretches between sentences become their own segments.
    """
    fps = perf.fps
    cuts = {start, stop}
    owner: dict[int, int] = {}
    for u in conv.utterances:
        if u.kind != "sentence":
            continue
        a, b = int(round(u.start_s * fps)), int(round(u.end_s * fps))
        if b <= start or a >= stop:
            continue
        a, b = max(a, start), min(b, stop)
        cuts.update((a, b))
        owner.setdefault(a, u.speaker)
    edges = sorted(cuts)
    identity = describe_identity(ch)
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b - a < 2:
            continue
        text, state = _describe_span(perf, a, b, rng, identity)
        out.append(
            CaptionSpan(
                start_frame=a - start,
                end_frame=b - start,
                text=text,
                state=state,
                speaker=owner.get(a, -1),
            )
        )
    return out


def cue_sentence(action: str | None = None, expression: str | None = None) -> str:
    """One cue sentence: ``action`` is a phrase of `ACTION_PHRASES` ("The character leans
    in."), ``expression`` one of `EXPRESSION_PHRASES` ("The character, smiling.")."""
    if (action is None) == (expression is None):
        raise ValueError("give exactly one of action= and expression=")
    return f"The character {action}." if action is not None else f"The character, {expression}."


def names_action(text: str) -> bool:
    """Whether a cue ``text`` names one of the Stage actions, in any of its phrasings
    (`ACTION_PHRASES`): the actions lpm-nano learnt. A cue naming only an expression does not."""
    text = text.lower()
    return any(phrase in text for phrases in ACTION_PHRASES.values() for phrase in phrases)


def cue_captions(
    ch: Character, perf: Performance, start: int, stop: int, rng: np.random.Generator
) -> list[CaptionSpan]:
    """Timed cues of session frames [start, stop): one span per run of frames with the same
    action and expression, skipping runs with neither (frame numbers relative to `start`).

    A cue names what happens and nothing else: the action, then the expression, each as its
    own sentence about "The character" (`cue_sentence`), in the form of the timed instructions
    of `lpm.bench.materialize` (a phrasing drawn per span). Who the character is stays in the
    clip's caption; repeating it in every cue drowns the few words that differ."""
    del ch  # the cue does not describe the character
    neutral = EXPRESSIONS.index("neutral")
    act, expr = perf.action[start:stop], perf.expression[start:stop]
    out: list[CaptionSpan] = []
    a = 0
    for b in range(1, stop - start + 1):
        if b < stop - start and act[b] == act[a] and expr[b] == expr[a]:
            continue
        parts = []
        if act[a] != 0:
            parts.append(cue_sentence(action=_pick(rng, ACTION_PHRASES[ACTIONS[int(act[a])]])))
        if expr[a] != neutral:
            phrase = _pick(rng, EXPRESSION_PHRASES[EXPRESSIONS[int(expr[a])]])
            parts.append(cue_sentence(expression=phrase))
        if parts:
            states = np.bincount(perf.state[start + a : start + b], minlength=len(STATES))
            out.append(
                CaptionSpan(
                    start_frame=a,
                    end_frame=b,
                    text=" ".join(parts),
                    state=STATES[int(states.argmax())],
                )
            )
        a = b
    return out
