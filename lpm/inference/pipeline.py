"""Offline generation (Base LPM): character image + audio + timed prompts -> video.

Frame alignment: latent frame f covers video frames [4f, 4f + 4). The causal Wan VAE turns F
latents into 1 + 4(F - 1) frames; the first decoded frame is repeated three times so a clip of
F latents is exactly 4F frames, matching the transformer's audio windows.

Long audio is generated in segments of ``segment_latents`` latents. Each later segment starts
``context_latents + blend_latents`` latents before the previous one ended: its first
``context_latents`` are the previous segment's latents held clean (timestep 0), the next
``blend_latents`` are generated again and cross-faded linearly with the previous segment's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lpm.device import resolve_device
from lpm.diffusion import add_noise, flow_sigmas, sample
from lpm.inference.bundle import ModelBundle
from lpm.inference.denoise import SegmentConditions, guided_velocity
from lpm.media import fit_image, write_mp4
from lpm.models.dit.model import References, TextCues

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""Called as ``progress(done_steps, total_steps)``."""


@dataclass(kw_only=True, frozen=True)
class ScriptSegment:
    """A text prompt in force from ``start`` to ``end`` seconds."""

    start: float
    end: float
    text: str

    def __post_init__(self) -> None:
        if not (0 <= self.start < self.end):
            raise ValueError(f"script segment needs 0 <= start < end, got {self.start}..{self.end}")
        if not isinstance(self.text, str):
            raise ValueError(
                f"script segment text must be a string, got {type(self.text).__name__}"
            )


def load_script(path: str | Path) -> list[ScriptSegment]:
    """A script file: a JSON or YAML list of ``{start, end, text}`` (seconds)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"script {path} does not exist")
    raw = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(raw)
        else:
            data = json.loads(raw)
    except Exception as err:  # noqa: BLE001 - any parse error becomes one clear message
        raise ValueError(f"script {path} is not valid JSON/YAML: {err}") from None
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ValueError(f"script {path} must be a list of {{start, end, text}} objects")
    try:
        return [
            ScriptSegment(start=float(d["start"]), end=float(d["end"]), text=d["text"])
            for d in data
        ]
    except KeyError as err:
        raise ValueError(
            f"script {path}: every segment needs start, end and text; missing {err}"
        ) from None


@dataclass(kw_only=True, frozen=True)
class ReferenceImage:
    """An identity reference: ``kind`` in global | body | expression, with its subtype."""

    kind: str
    subtype: int
    image: np.ndarray


@dataclass
class GeneratedVideo:
    """Frames (T, H, W, 3) uint8 at ``fps`` and the mixed audio track (N,) at ``sample_rate``."""

    frames: np.ndarray
    fps: int
    audio: np.ndarray
    sample_rate: int
    latents: torch.Tensor
    """(1, C, F, h, w) generated latents."""

    def save(self, path: str | Path) -> Path:
        """Write an H.264 + AAC mp4, atomically."""
        return write_mp4(path, self.frames, self.fps, self.audio, self.sample_rate)


@dataclass(frozen=True)
class SegmentPlan:
    start: int
    """First latent frame."""
    length: int
    """Latent frames generated (context included)."""
    context: int
    """Leading clean latents taken from the previous segment."""
    blend: int
    """Latents after the context cross-faded with the previous segment."""


def plan_segments(total: int, segment: int, context: int, blend: int) -> list[SegmentPlan]:
    """Cover ``total`` latents with overlapping segments (see the module docstring)."""
    if total < 1:
        raise ValueError("nothing to generate: the video has no latent frames")
    plans = [SegmentPlan(0, min(segment, total), 0, 0)]
    while plans[-1].start + plans[-1].length < total:
        end = plans[-1].start + plans[-1].length
        start = end - context - blend
        plans.append(SegmentPlan(start, min(segment, total - start), context, blend))
    return plans


@dataclass(kw_only=True)
class PreparedVideo:
    """The encoded inputs of one video, shared by every seed sampled from them."""

    speak: np.ndarray
    """(N,) speak audio at the bundle's sample rate, cut or padded to the video's length."""
    listen: np.ndarray
    """(N,) listen audio, likewise."""
    audio_features: dict[str, torch.Tensor]
    """``speak`` / ``listen`` -> (1, T, audio_dim) features, one token per video frame."""
    first: torch.Tensor
    """(1, C, 1, h, w) latent of the character image (first frame and global reference)."""
    extra: list[tuple[str, int, torch.Tensor]]
    """(kind, subtype, (1, C, 1, h, w) latent) of each body-view / expression reference."""
    prompts: dict[int, str]
    """Segment index -> its text prompt."""
    text: dict[str, tuple[torch.Tensor, torch.Tensor]]
    """Prompt or cue -> ((1, Lt, text_dim) features, (1, Lt) mask)."""
    cues: dict[int, list[str | None]] = field(default_factory=dict)
    """Segment index -> the timed cue of each of its latent frames (None: no cue)."""
    plans: list[SegmentPlan]
    """The segments that cover the video."""
    n_latents: int
    """Latent frames of the video."""
    n_frames: int
    """Video frames (n_latents * temporal compression)."""


def fit_audio(wave: np.ndarray, seconds: float, sample_rate: int) -> np.ndarray:
    """``wave`` cut to ``seconds``, or looped up to it when shorter (``--seconds``)."""
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    n = round(seconds * sample_rate)
    reps = -(-n // max(1, len(wave)))
    return np.tile(wave, reps)[:n]


class Pipeline:
    """Offline generation with a `ModelBundle`; `lpm generate` is a thin layer over it."""

    def __init__(self, bundle: ModelBundle, device: str | torch.device = "cpu") -> None:
        self.bundle = bundle.eval()
        self.device = resolve_device(device)
        for module in bundle.modules().values():
            module.to(self.device)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
    ) -> Pipeline:
        """Load a bundle; ``dtype`` is the transformer's (`ModelBundle.load`)."""
        return cls(ModelBundle.load(path, device=device, dtype=dtype), device=device)

    # ---- inputs -------------------------------------------------------------------------------
    def _audio(self, source, seconds: float | None) -> np.ndarray | None:
        from lpm.models.audio import load_audio

        if source is None:
            return None
        sr = self.bundle.spec.sample_rate
        if isinstance(source, (str, Path)):
            wave = load_audio(source, sr, allow_silent=True)
        else:
            wave = load_audio(np.asarray(source, np.float32), sr, source_sr=sr, allow_silent=True)
        return wave if seconds is None else fit_audio(wave, seconds, sr)

    def _latent_image(self, image: np.ndarray) -> torch.Tensor:
        spec = self.bundle.spec
        rgb = fit_image(np.asarray(image), spec.height, spec.width)
        video = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1).float() / 127.5 - 1.0
        with torch.no_grad():
            return self.bundle.vae.encode(video[None, :, None])  # (1, C, 1, h, w)

    def _prompt_features(
        self, texts: Sequence[str]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        unique = sorted(set(texts))
        with torch.no_grad():
            emb, mask = self.bundle.text_encoder.encode(unique)
        return {
            t: (emb[i : i + 1].to(self.device), mask[i : i + 1].to(self.device))
            for i, t in enumerate(unique)
        }

    # ---- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        image: np.ndarray,
        *,
        speak_audio=None,
        listen_audio=None,
        script: Sequence[ScriptSegment] = (),
        references: Sequence[ReferenceImage] = (),
        seconds: float | None = None,
        seed: int = 0,
        steps: int | None = None,
        text_scale: float | None = None,
        audio_scale: float | None = None,
        shift: float | None = None,
        solver: str | None = None,
        context_sigma: float | None = None,
        cue_scale: float | None = None,
        cue_min_sigma: float | None = None,
        progress: ProgressFn | None = None,
    ) -> GeneratedVideo:
        """Generate a video of the character in ``image`` (H, W, 3 uint8 RGB).

        ``speak_audio`` / ``listen_audio`` are file paths or (N,) float arrays at the bundle's
        sample rate; missing streams are silence. ``seconds`` cuts or loops the audio; without
        it the longer audio sets the length.
        """
        prepared = self.prepare(
            image, speak_audio=speak_audio, listen_audio=listen_audio, script=script,
            references=references, seconds=seconds,
        )  # fmt: skip
        latents = self.sample_latents(
            prepared, seed=seed, steps=steps, text_scale=text_scale, audio_scale=audio_scale,
            shift=shift, solver=solver, context_sigma=context_sigma, cue_scale=cue_scale,
            cue_min_sigma=cue_min_sigma, progress=progress,
        )  # fmt: skip
        return self.video(prepared, latents)

    @torch.no_grad()
    def prepare(
        self,
        image: np.ndarray,
        *,
        speak_audio=None,
        listen_audio=None,
        script: Sequence[ScriptSegment] = (),
        references: Sequence[ReferenceImage] = (),
        seconds: float | None = None,
    ) -> PreparedVideo:
        """Encode the inputs of one video (arguments as in `generate`) once, so that several
        seeds can be sampled from them (`sample_latents`)."""
        spec, cfg = self.bundle.spec, self.bundle.cfg
        speak = self._audio(speak_audio, seconds)
        listen = self._audio(listen_audio, seconds)
        if seconds is None:
            lengths = [len(w) for w in (speak, listen) if w is not None]
            if not lengths:
                raise ValueError(
                    "give speak or listen audio, or --seconds for a silent (idle) video"
                )
            seconds = max(lengths) / spec.sample_rate
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        span = cfg.temporal_compression
        n_latents = max(1, round(seconds * cfg.fps / span))
        n_frames = n_latents * span
        n_samples = round(n_frames * spec.sample_rate / cfg.fps)
        speak = _fit(speak, n_samples)
        listen = _fit(listen, n_samples)
        feats = {}
        for name, wave in (("speak", speak), ("listen", listen)):
            tensor = torch.from_numpy(wave).to(self.device)[None]
            feats[name] = self.bundle.audio_encoder(tensor, n_frames).float()  # (1, T, D)
        prompts = _prompts_per_segment(script, n_latents, spec, cfg)
        plans = plan_segments(
            n_latents, spec.segment_latents, spec.context_latents, spec.blend_latents
        )
        cues = _cues_per_segment(script, prompts, plans, cfg)
        texts = [*prompts.values()] or [""]
        texts += [c for per in cues.values() for c in per if c is not None]
        return PreparedVideo(
            speak=speak,
            listen=listen,
            audio_features=feats,
            first=self._latent_image(image),
            extra=[(r.kind, r.subtype, self._latent_image(r.image)) for r in references],
            prompts=prompts,
            text=self._prompt_features(texts),
            cues=cues,
            plans=plans,
            n_latents=n_latents,
            n_frames=n_frames,
        )

    def segment_conditions(
        self, prepared: PreparedVideo, index: int, latents: torch.Tensor | None = None
    ) -> SegmentConditions:
        """The conditions of segment ``index``; ``latents`` (1, C, F, h, w) holds the video made
        so far (needed from segment 1 on: its context comes from the previous segment)."""
        cfg, plan = self.bundle.cfg, prepared.plans[index]
        span = cfg.temporal_compression
        first = prepared.first
        refs = _references(first if index == 0 else None, first, prepared.extra)
        prompt = prepared.prompts.get(index, "")
        back = max(cfg.speak_window[0], cfg.listen_window[0])
        fwd = max(cfg.speak_window[1], cfg.listen_window[1])
        a0 = max(0, plan.start * span - back)
        a1 = min(prepared.n_frames, (plan.start + plan.length) * span + fwd)
        if plan.context and latents is None:
            raise ValueError(f"segment {index} continues the video: pass the latents made so far")
        return SegmentConditions(
            text=prepared.text[prompt][0],
            text_mask=prepared.text[prompt][1],
            speak_audio=prepared.audio_features["speak"][:, a0:a1],
            listen_audio=prepared.audio_features["listen"][:, a0:a1],
            audio_offset=a0 - plan.start * span,
            references=refs,
            context=latents[:, :, plan.start : plan.start + plan.context] if plan.context else None,
            cues=text_cues(prepared.cues.get(index, []), prepared.text.__getitem__),
        )

    @torch.no_grad()
    def sample_latents(
        self,
        prepared: PreparedVideo,
        *,
        seed: int = 0,
        steps: int | None = None,
        text_scale: float | None = None,
        audio_scale: float | None = None,
        shift: float | None = None,
        solver: str | None = None,
        context_sigma: float | None = None,
        cue_scale: float | None = None,
        cue_min_sigma: float | None = None,
        progress: ProgressFn | None = None,
    ) -> torch.Tensor:
        """Denoise every segment of a prepared video; returns its (1, C, F, h, w) latents."""
        cfg, defaults = self.bundle.cfg, self.bundle.spec.sampling
        steps = defaults.steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        shift = defaults.shift if shift is None else shift
        if shift <= 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        ctx_sigma = defaults.context_sigma if context_sigma is None else context_sigma
        if not 0.0 <= ctx_sigma < 1.0:
            raise ValueError(f"context_sigma must be in [0, 1), got {ctx_sigma}")
        plans = prepared.plans
        total_steps = steps * len(plans)
        grid = prepared.first.shape[3:]
        latents = torch.zeros(1, cfg.out_channels, prepared.n_latents, *grid, device=self.device)
        for i, plan in enumerate(plans):
            cond = self.segment_conditions(prepared, i, latents)
            gen = torch.Generator(device="cpu").manual_seed(seed * 1000003 + i)
            noise = torch.randn((1, cfg.out_channels, plan.length, *grid), generator=gen)
            if cond.context is not None and ctx_sigma > 0:
                g_ctx = torch.Generator(device="cpu").manual_seed(seed * 1000003 + i + 500009)
                ctx_noise = torch.randn(cond.context.shape, generator=g_ctx).to(cond.context)
                cond.context = add_noise(cond.context, ctx_noise, ctx_sigma)
                cond.context_sigma = ctx_sigma
            model_fn = guided_velocity(
                self.bundle.transformer,
                cond,
                text_scale=defaults.text_scale if text_scale is None else text_scale,
                audio_scale=defaults.audio_scale if audio_scale is None else audio_scale,
                cue_scale=defaults.cue_scale if cue_scale is None else cue_scale,
                cue_min_sigma=defaults.cue_min_sigma if cue_min_sigma is None else cue_min_sigma,
            )
            sigmas = flow_sigmas(steps, shift=shift)

            def callback(step, _n, _x, _x0, offset=i * steps):
                if progress is not None:
                    progress(offset + step + 1, total_steps)

            out = sample(
                model_fn,
                noise.to(self.device),
                sigmas,
                solver=solver or defaults.solver,
                callback=callback,
            )
            _place(latents, out, plan)
        return latents

    def video(self, prepared: PreparedVideo, latents: torch.Tensor) -> GeneratedVideo:
        """Decode ``latents`` (1, C, F, h, w) of a prepared video, with its mixed audio."""
        mix = np.clip(prepared.speak + prepared.listen, -1.0, 1.0).astype(np.float32)
        return GeneratedVideo(
            frames=self.decode(latents, prepared.audio_features["speak"]),
            fps=self.bundle.cfg.fps,
            audio=mix,
            sample_rate=self.bundle.spec.sample_rate,
            latents=latents.cpu(),
        )

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, speak_features: torch.Tensor | None = None):
        """(T, H, W, 3) uint8 frames of (1, C, F, h, w) latents; T = F * temporal compression.

        ``speak_features`` (1, T, D): the speak audio's features, which a decoder with a speech
        path reads (lpm-nano's); None decodes as if the performer were silent.
        """
        span = self.bundle.cfg.temporal_compression
        if self.bundle.spec.decoder == "light":
            video = self.bundle.light_decoder(latents)
        else:
            speech = decoder_speech(self.bundle, speak_features)
            kw = {} if speech is None else {"speech": speech}
            video = self.bundle.vae.decode(latents, **kw)  # (1, 3, 1 + 4(F-1), H, W)
            video = torch.cat([video[:, :, :1]] * (span - 1) + [video], dim=2)
        video = ((video[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return video.permute(1, 2, 3, 0).cpu().numpy()


def decoder_speech(bundle: ModelBundle, speak_features: torch.Tensor | None):
    """``speak_features`` if the bundle's VAE decoder reads speech, else None; a decoder that
    reads features of another width than the audio encoder's is a broken bundle."""
    dim = getattr(bundle.vae, "speech_dim", 0)
    if not dim or speak_features is None:
        return None
    if speak_features.shape[-1] != dim:
        raise ValueError(
            f"the VAE decoder reads {dim}-wide speech features but the bundle's audio encoder "
            f"({bundle.spec.audio_encoder}) gives {speak_features.shape[-1]}: pack the bundle "
            "with the encoders its VAE was trained with"
        )
    return speak_features


def _fit(wave: np.ndarray | None, n: int) -> np.ndarray:
    if wave is None:
        return np.zeros(n, np.float32)
    out = np.zeros(n, np.float32)
    out[: min(n, len(wave))] = wave[:n]
    return out


def _prompts_per_segment(script, n_latents: int, spec, cfg) -> dict[int, str]:
    """The prompt of each segment: the script text covering most of the segment's time span."""
    plans = plan_segments(n_latents, spec.segment_latents, spec.context_latents, spec.blend_latents)
    latent_s = cfg.temporal_compression / cfg.fps
    prompts: dict[int, str] = {}
    for i, plan in enumerate(plans):
        t0, t1 = plan.start * latent_s, (plan.start + plan.length) * latent_s
        best, best_overlap = "", 0.0
        for seg in script:
            overlap = min(t1, seg.end) - max(t0, seg.start)
            if overlap > best_overlap:
                best, best_overlap = seg.text, overlap
        prompts[i] = best
    return prompts


def _cues_per_segment(script, prompts: dict[int, str], plans, cfg) -> dict[int, list[str | None]]:
    """The timed cue of every latent frame of every segment: the script texts covering the
    frame's middle, in script order and joined, leaving out the segment's own prompt (a script
    of consecutive segments has no cues; a whole-video prompt with timed instructions has)."""
    span = cfg.temporal_compression
    return {
        i: [
            script_cue(script, (f * span + span // 2) / cfg.fps, prompts.get(i, ""))
            for f in range(plan.start, plan.start + plan.length)
        ]
        for i, plan in enumerate(plans)
    }


def script_cue(script, t: float, prompt: str) -> str | None:
    """The cue at time ``t`` (s): the texts of the script segments covering it other than the
    ``prompt`` in force, in script order and joined; None if there are none."""
    texts = [s.text for s in script if s.start <= t < s.end and s.text != prompt]
    return " ".join(texts) if texts else None


def text_cues(per_frame: Sequence[str | None], encode) -> TextCues | None:
    """`TextCues` (batch 1) of per-latent-frame cue texts; ``encode(text)`` gives a cue's
    ((1, Lt, D) features, (1, Lt) mask). None when no frame has a cue."""
    names = list(dict.fromkeys(c for c in per_frame if c is not None))
    if not names:
        return None
    feats = torch.stack([encode(c)[0][0] for c in names])[None]  # (1, S, Lt, D)
    mask = torch.stack([encode(c)[1][0] for c in names])[None]
    index = torch.tensor([[-1 if c is None else names.index(c) for c in per_frame]])
    return TextCues(feats, mask.bool(), index.to(feats.device))


def _references(first_frame, global_ref, extra) -> References:
    latents, kinds = [], []
    if first_frame is not None:
        latents.append(first_frame)
        kinds.append(("first_frame", 0))
    latents.append(global_ref)
    kinds.append(("global", 0))
    for kind, subtype, lat in extra:
        latents.append(lat)
        kinds.append((kind, subtype))
    return References(torch.cat(latents, dim=2), tuple(kinds))


def _place(latents: torch.Tensor, out: torch.Tensor, plan: SegmentPlan) -> None:
    """Write a segment's latents, cross-fading the blend region with what is already there."""
    s, c, b = plan.start, plan.context, plan.blend
    if b:
        w = torch.linspace(0, 1, b + 2, device=out.device)[1:-1].view(1, 1, b, 1, 1)
        old = latents[:, :, s + c : s + c + b]
        latents[:, :, s + c : s + c + b] = (1 - w) * old + w * out[:, :, c : c + b]
    latents[:, :, s + c + b : s + plan.length] = out[:, :, c + b :]
