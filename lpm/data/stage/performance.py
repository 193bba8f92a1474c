"""Per-frame performance: audio, script and temperament -> one `FrameState` per video frame.

Speaking: the mouth follows the performer's own speech (RMS envelope for opening, spectral
centroid for rounding), leading it by `LIP_LEAD_FRAMES`; head pitch and eyebrows follow
prosody (envelope accents and F0). Listening: the mouth is still; the performer nods after the
partner's sentence ends, smiles or looks surprised after the partner's prosodic peaks (delayed by
0.3-0.9 s, not every time), shifts gaze and sways. Idle: breathing, blinks, sway. Expression
changes cross-fade over `FADE_S`; text-triggered actions are timed events with smooth ramps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lpm.data.stage.character import Character
from lpm.data.stage.conversation import Conversation
from lpm.data.stage.render import FrameState
from lpm.data.stage.schema import ACTIONS, EXPRESSIONS, STATES

FADE_S = 0.4
"""Expression cross-fade time (seconds)."""
RAMP_S = 0.25
"""Action ramp-in and ramp-out time (seconds)."""

_ACTION_DURATION_S = {
    "nod": (1.0, 1.5),
    "shake_head": (1.0, 1.6),
    "turn_left": (1.6, 3.0),
    "turn_right": (1.6, 3.0),
    "look_up": (1.2, 2.5),
    "lean_in": (1.5, 3.0),
    "raise_eyebrows": (0.8, 1.5),
    "wave": (1.5, 2.5),
}
_BASE_EXPRESSION_WEIGHTS = (0.3, 0.16, 0.08, 0.08, 0.08, 0.08, 0.08, 0.14)


@dataclass(frozen=True, kw_only=True)
class ActionEvent:
    """One action on the session timeline (seconds)."""

    action: str
    start_s: float
    duration_s: float
    source: str
    """`prompt` (text-triggered, appears in captions) or `reaction` (a listening nod)."""

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(kw_only=True)
class Performance:
    """Per-frame performance tracks over a session; every array has shape (T,)."""

    fps: int
    view: str
    state: np.ndarray
    """int8 index into `schema.STATES`."""
    mouth_open: np.ndarray
    mouth_round: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    gaze_x: np.ndarray
    gaze_y: np.ndarray
    brow_raise: np.ndarray
    blink: np.ndarray
    sway_x: np.ndarray
    sway_y: np.ndarray
    lean: np.ndarray
    wave: np.ndarray
    wave_phase: np.ndarray
    expression: np.ndarray
    intensity: np.ndarray
    prev_expression: np.ndarray
    prev_intensity: np.ndarray
    action: np.ndarray
    """int8 index into `schema.ACTIONS`."""
    events: list[ActionEvent] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.state.shape[0])

    def frame_state(self, i: int) -> FrameState:
        """The renderer input of frame `i`."""
        return FrameState(
            mouth_open=float(self.mouth_open[i]),
            mouth_round=float(self.mouth_round[i]),
            yaw=float(self.yaw[i]),
            pitch=float(self.pitch[i]),
            roll=float(self.roll[i]),
            gaze_x=float(self.gaze_x[i]),
            gaze_y=float(self.gaze_y[i]),
            brow_raise=float(self.brow_raise[i]),
            expression=int(self.expression[i]),
            intensity=float(self.intensity[i]),
            prev_expression=int(self.prev_expression[i]),
            prev_intensity=float(self.prev_intensity[i]),
            blink=float(self.blink[i]),
            view=self.view,
            sway_x=float(self.sway_x[i]),
            sway_y=float(self.sway_y[i]),
            lean=float(self.lean[i]),
            wave=float(self.wave[i]),
            wave_phase=float(self.wave_phase[i]),
        )


# --- audio features per video frame ------------------------------------------------------------


def _frame_windows(
    audio: np.ndarray, sample_rate: int, fps: int, n_frames: int, width: int
) -> np.ndarray:
    centres = np.round((np.arange(n_frames) + 0.5) * sample_rate / fps).astype(np.int64)
    padded = np.pad(audio.astype(np.float32), (width, width))
    idx = centres[:, None] + np.arange(width)[None, :] + width - width // 2
    return padded[np.clip(idx, 0, len(padded) - 1)]


def audio_features(
    audio: np.ndarray, sample_rate: int, fps: int, n_frames: int
) -> dict[str, np.ndarray]:
    """Per-frame RMS level (dB full scale), spectral centroid (Hz) and F0 (Hz, 0 if unvoiced).

    Frame i is centred at (i + 0.5) / fps seconds; shapes are (n_frames,).
    """
    win_rms = max(16, int(sample_rate / fps))
    rms = np.sqrt(np.mean(_frame_windows(audio, sample_rate, fps, n_frames, win_rms) ** 2, 1))
    db = 20.0 * np.log10(rms + 1e-6)
    n_fft = 1 << int(math.ceil(math.log2(0.05 * sample_rate)))
    w = _frame_windows(audio, sample_rate, fps, n_frames, n_fft) * np.hanning(n_fft)
    spec = np.abs(np.fft.rfft(w, axis=1))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = freqs < 4000
    power = spec[:, band] ** 2
    centroid = (power * freqs[band]).sum(1) / (power.sum(1) + 1e-12)
    ac = np.fft.irfft(np.abs(np.fft.rfft(w, n=2 * n_fft, axis=1)) ** 2, axis=1)[:, :n_fft]
    lo, hi = int(sample_rate / 400), int(sample_rate / 70)
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(n_frames), lag] / (ac[:, 0] + 1e-12)
    f0 = np.where((strength > 0.3) & (db > -45), sample_rate / lag, 0.0)
    return {"db": db, "centroid": centroid, "f0": f0}


def lagged_correlation(
    a: np.ndarray, b: np.ndarray, lag: int, mask: np.ndarray | None = None
) -> float:
    """Pearson correlation of a[t] with b[t + lag] over frames t where `mask` (default: all).

    Returns 0.0 when fewer than 5 frames remain or either side is constant.
    """
    n = len(a)
    idx = np.arange(max(0, -lag), min(n, n - lag))
    if mask is not None:
        idx = idx[np.asarray(mask, bool)[idx]]
    if len(idx) < 5 or a[idx].std() == 0 or b[idx + lag].std() == 0:
        return 0.0
    return float(np.corrcoef(a[idx], b[idx + lag])[0, 1])


def _smooth(x: np.ndarray, frames: float) -> np.ndarray:
    if frames <= 1:
        return x
    k = np.hanning(int(2 * frames) + 3)[1:-1]
    k /= k.sum()
    return np.convolve(np.pad(x, len(k) // 2, mode="edge"), k, mode="valid")[: len(x)]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _ou(
    rng: np.random.Generator, n: int, fps: int, sigma: np.ndarray | float, theta: float = 0.8
) -> np.ndarray:
    """Ornstein-Uhlenbeck drift with stationary std `sigma` (per frame or scalar)."""
    dt = 1.0 / fps
    sig = np.broadcast_to(np.asarray(sigma, np.float64), (n,))
    out = np.zeros(n)
    eps = rng.standard_normal(n)
    x = 0.0
    for i in range(n):
        x += -theta * x * dt + sig[i] * math.sqrt(2 * theta * dt) * eps[i]
        out[i] = x
    return out


def _active(conv: Conversation, speaker: int, times: np.ndarray) -> np.ndarray:
    on = np.zeros(len(times), bool)
    for u in conv.utterances:
        if u.speaker == speaker:
            on |= (times >= u.start_s) & (times < u.end_s)
    return on


# --- timelines ---------------------------------------------------------------------------------


def _schedule_events(
    rng: np.random.Generator,
    conv: Conversation,
    ch: Character,
    duration_s: float,
    listening: np.ndarray,
    fps: int,
) -> list[ActionEvent]:
    events: list[ActionEvent] = []

    def free(start: float, dur: float) -> bool:
        return all(start >= e.end_s + 0.2 or start + dur <= e.start_s - 0.2 for e in events)

    n_prompt = int(rng.poisson(duration_s / 5.0))
    names = ACTIONS[1:]
    for _ in range(n_prompt):
        name = names[int(rng.integers(len(names)))]
        lo, hi = _ACTION_DURATION_S[name]
        dur = float(rng.uniform(lo, hi))
        start = float(rng.uniform(0.0, max(0.1, duration_s - dur)))
        if free(start, dur):
            events.append(ActionEvent(action=name, start_s=start, duration_s=dur, source="prompt"))
    for u in conv.utterances:
        if u.speaker != 1 or u.kind != "sentence" or rng.random() > ch.nod_tendency:
            continue
        start = u.end_s + float(rng.uniform(0.15, 0.6))
        frame = int(start * fps)
        dur = float(rng.uniform(0.8, 1.2))
        if 0 <= frame < len(listening) and start + dur < duration_s and free(start, dur):
            events.append(
                ActionEvent(action="nod", start_s=start, duration_s=dur, source="reaction")
            )
    events.sort(key=lambda e: e.start_s)
    return events


def _expression_targets(
    rng: np.random.Generator,
    conv: Conversation,
    n: int,
    fps: int,
    listening: np.ndarray,
    partner_db: np.ndarray,
):
    base = int(rng.choice(len(EXPRESSIONS), p=np.asarray(_BASE_EXPRESSION_WEIGHTS)))
    base_i = float(rng.uniform(0.5, 1.0))
    target_e = np.full(n, base, np.int64)
    target_i = np.full(n, base_i)
    # occasional deliberate expression changes
    for _ in range(int(rng.integers(0, 3))):
        e = int(rng.integers(len(EXPRESSIONS)))
        start = int(rng.integers(0, n))
        length = int(rng.uniform(2.0, 5.0) * fps)
        target_e[start : start + length] = e
        target_i[start : start + length] = float(rng.uniform(0.6, 1.0))
    # listening reactions to the partner's prosodic peaks (delayed, not every time)
    level = _smooth(partner_db, 0.3 * fps)
    speaking = partner_db > -45
    if speaking.any():
        thr = np.percentile(level[speaking], 80)
        last = -10 * fps
        for i in range(1, n - 1):
            peak = level[i] >= level[i - 1] and level[i] > level[i + 1] and level[i] > thr
            if not peak or i - last < 1.5 * fps or rng.random() > 0.45:
                continue
            last = i
            start = i + int(rng.uniform(0.3, 0.9) * fps)
            if start >= n or not listening[start]:
                continue
            e = (
                EXPRESSIONS.index("happy")
                if rng.random() < 0.65
                else EXPRESSIONS.index("surprised")
            )
            length = int(rng.uniform(1.0, 2.5) * fps)
            target_e[start : start + length] = e
            target_i[start : start + length] = float(rng.uniform(0.5, 1.0))
    return target_e, target_i


def _crossfade(target_e: np.ndarray, target_i: np.ndarray, fps: int):
    n = len(target_e)
    fade = max(1.0, FADE_S * fps)
    expr, inten = np.zeros(n, np.int64), np.zeros(n)
    prev, prev_i = np.zeros(n, np.int64), np.zeros(n)
    cur_e, cur_i = int(target_e[0]), float(target_i[0])
    old_e, old_i, since = 0, 0.0, fade
    for f in range(n):
        if int(target_e[f]) != cur_e or float(target_i[f]) != cur_i:
            u = float(_smoothstep(np.array(since / fade)))
            old_e, old_i = cur_e, cur_i * u
            cur_e, cur_i, since = int(target_e[f]), float(target_i[f]), 0.0
        u = float(_smoothstep(np.array(since / fade)))
        expr[f], inten[f], prev[f], prev_i[f] = cur_e, cur_i * u, old_e, old_i * (1 - u)
        since += 1
    return expr, inten, prev, prev_i


def _apply_events(
    p: dict[str, np.ndarray], events: list[ActionEvent], times: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    action = np.zeros(len(times), np.int8)
    for e in events:
        tau = times - e.start_s
        inside = (tau >= 0) & (tau < e.duration_s)
        if not inside.any():
            continue
        w = _smoothstep(tau / RAMP_S) * _smoothstep((e.duration_s - tau) / RAMP_S) * inside
        action[inside] = ACTIONS.index(e.action)
        amp = float(rng.uniform(0.8, 1.2))
        if e.action == "nod":
            p["pitch"] -= amp * 11.0 * w * np.abs(np.sin(2 * math.pi * tau / e.duration_s))
        elif e.action == "shake_head":
            p["yaw"] += amp * 16.0 * w * np.sin(4 * math.pi * tau / e.duration_s)
        elif e.action in ("turn_left", "turn_right"):
            sign = -1.0 if e.action == "turn_left" else 1.0
            p["yaw"] += sign * amp * 38.0 * w
            p["gaze_x"] += sign * 0.4 * w
        elif e.action == "look_up":
            p["pitch"] += amp * 16.0 * w
            p["gaze_y"] -= 0.7 * w
        elif e.action == "lean_in":
            p["lean"] = np.maximum(p["lean"], w)
        elif e.action == "raise_eyebrows":
            p["brow_raise"] += 0.9 * w
        elif e.action == "wave":
            p["wave"] = np.maximum(p["wave"], w)
            p["wave_phase"] = np.where(inside, 2 * math.pi * 2.2 * tau, p["wave_phase"])
    return action


def _blinks(rng: np.random.Generator, ch: Character, times: np.ndarray) -> np.ndarray:
    blink = np.zeros(len(times))
    if len(times) == 0:
        return blink
    t = float(rng.exponential(1.0 / ch.blink_rate_hz))
    while t < times[-1] + 1:
        blink = np.maximum(blink, np.exp(-(((times - t) / 0.07) ** 2)))
        t += 0.25 + float(rng.exponential(1.0 / ch.blink_rate_hz))
    return np.clip(blink * 1.1, 0.0, 1.0)


def speech_opening(db: np.ndarray) -> np.ndarray:
    """The mouth opening the speech envelope alone gives, per frame, from the per-frame RMS
    level in dB (`audio_features`): level mapped from -40..-10 dB to 0..1, smoothed over 1.5
    frames (jaw inertia), raised to 1.2. `perform` multiplies it by a random articulation gain
    and moves it earlier by the character's lip lead."""
    level = np.clip((np.asarray(db) + 40.0) / 30.0, 0.0, 1.0)
    return _smooth(level, 1.5) ** 1.2


def perform(
    ch: Character, conv: Conversation, fps: int, rng: np.random.Generator, view: str = "front"
) -> Performance:
    """Compute the performer's per-frame performance over the whole conversation session.

    Args:
        ch: the performer (speaker 0 of `conv`).
        fps: video frame rate (frames per second).
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n = int(math.floor(conv.duration_s * fps + 1e-9))
    times = (np.arange(n) + 0.5) / fps
    own = audio_features(conv.track(0), conv.sample_rate, fps, n)
    other = audio_features(conv.track(1), conv.sample_rate, fps, n)
    speaking = _active(conv, 0, times)
    partner = _active(conv, 1, times)
    state = np.where(
        speaking,
        STATES.index("speak"),
        np.where(partner, STATES.index("listen"), STATES.index("idle")),
    ).astype(np.int8)
    listening = state == STATES.index("listen")

    # mouth: own envelope -> opening, own centroid -> rounding; leads audio by lip_lead_frames
    level = np.clip((own["db"] + 40.0) / 30.0, 0.0, 1.0)
    # articulation variety (a slow per-syllable gain) on the envelope's opening
    articulation = np.clip(1.0 + _ou(rng, n, fps, 0.12, theta=3.0), 0.6, 1.3)
    opening = np.clip(speech_opening(own["db"]) * articulation, 0.0, 1.0)
    rounding = np.clip((1700.0 - own["centroid"]) / 900.0, 0.0, 1.0)
    lead = ch.lip_lead_frames
    if lead > 0:
        opening = np.concatenate([opening[lead:], np.repeat(opening[-1:], lead)])
        rounding = np.concatenate([rounding[lead:], np.repeat(rounding[-1:], lead)])
    mouth_open = np.where(speaking, opening, 0.0)
    mouth_round = np.where(speaking, _smooth(rounding, 1.5), 0.0)

    # prosody: envelope accents nod the head, F0 rises lift the brows
    k = ch.expressiveness
    accent = _smooth(level, 0.12 * fps) - _smooth(level, 1.0 * fps)
    voiced = own["f0"] > 0
    f0_ref = float(np.median(own["f0"][voiced])) if voiced.any() else 1.0
    rise = np.where(voiced, np.clip((own["f0"] - f0_ref) / f0_ref * 4.0, 0.0, 1.0), 0.0)
    sigma = np.where(speaking, 3.0, np.where(listening, 2.0, 1.5))
    p: dict[str, np.ndarray] = {
        "pitch": np.where(speaking, 9.0 * k * accent, 0.0) + _ou(rng, n, fps, sigma * 0.7),
        "yaw": _ou(rng, n, fps, sigma * 1.5, theta=0.5),
        "roll": _ou(rng, n, fps, sigma * 0.8, theta=0.6),
        "brow_raise": _smooth(np.where(speaking, 0.6 * k * rise, 0.0), 0.1 * fps),
        "lean": np.zeros(n),
        "wave": np.zeros(n),
        "wave_phase": np.zeros(n),
    }
    # gaze: saccades to new targets every 1-4 s, mostly near the camera
    gx, gy = np.zeros(n), np.zeros(n)
    i = 0
    while i < n:
        j = i + int(rng.uniform(1.0, 4.0) * fps)
        gx[i:j] = float(np.clip(rng.normal(0.0, 0.3), -0.8, 0.8))
        gy[i:j] = float(np.clip(rng.normal(0.0, 0.2), -0.6, 0.6))
        i = j
    p["gaze_x"], p["gaze_y"] = _smooth(gx, 1.0), _smooth(gy, 1.0)

    duration_s = n / fps
    events = _schedule_events(rng, conv, ch, duration_s, listening, fps)
    action = _apply_events(p, events, times, rng)
    target_e, target_i = _expression_targets(rng, conv, n, fps, listening, other["db"])
    expr, inten, prev, prev_i = _crossfade(target_e, target_i, fps)

    breath_period = float(rng.uniform(3.0, 5.0))
    phase = float(rng.uniform(0, 2 * math.pi))
    sway_x = 0.05 * np.sin(2 * math.pi * times / float(rng.uniform(5, 9)) + phase) + _ou(
        rng, n, fps, 0.02, theta=0.4
    )
    sway_y = 0.025 * np.sin(2 * math.pi * times / breath_period)
    f32 = lambda x: np.asarray(x, np.float32)
    return Performance(
        fps=fps,
        view=view,
        state=state,
        mouth_open=f32(np.clip(mouth_open, 0, 1)),
        mouth_round=f32(mouth_round),
        yaw=f32(p["yaw"]),
        pitch=f32(p["pitch"]),
        roll=f32(p["roll"]),
        gaze_x=f32(np.clip(p["gaze_x"], -1, 1)),
        gaze_y=f32(np.clip(p["gaze_y"], -1, 1)),
        brow_raise=f32(np.clip(p["brow_raise"], -1, 1)),
        blink=f32(_blinks(rng, ch, times)),
        sway_x=f32(sway_x),
        sway_y=f32(sway_y),
        lean=f32(p["lean"]),
        wave=f32(p["wave"]),
        wave_phase=f32(p["wave_phase"]),
        expression=expr.astype(np.int8),
        intensity=f32(inten),
        prev_expression=prev.astype(np.int8),
        prev_intensity=f32(prev_i),
        action=action,
        events=events,
    )
