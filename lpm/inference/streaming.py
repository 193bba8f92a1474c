"""`StreamingSession`: Online LPM as a never-ending stream of 1-s chunks.

Audio (speak and listen) and the prompt arrive incrementally; conditions change only at chunk
boundaries. Each chunk runs three stages — backbone, refiner, decode — that can run as a
pipeline (backbone on chunk n, refiner on n-1, decode on n-2, one thread each) with bounded
queues, so generation never runs more than ``lookahead`` chunks ahead of whoever consumes
frames. Memory is flat: the KV caches hold refs + sink + window, the audio buffers the last 3 s,
the decoder one latent frame (light decoder) or its causal conv cache (VAE).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lpm.data.stage.captions import names_action
from lpm.device import resolve_device
from lpm.inference.bundle import ModelBundle
from lpm.inference.chunk_step import ChunkConditions, ChunkStepper, OnlineSchedule
from lpm.inference.pipeline import (
    ReferenceImage,
    _references,
    decoder_speech,
    script_cue,
    text_cues,
)
from lpm.media import fit_image


@dataclass
class StreamChunk:
    """One decoded chunk."""

    index: int
    frames: np.ndarray
    """(Tc, H, W, 3) uint8 RGB."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage on this chunk: conditions, backbone, refiner, decode."""
    part: int = 0
    """Which part of chunk ``index`` this is when chunks are delivered in parts (`chunks`
    with ``part_latents``); 0 otherwise."""
    last: bool = True
    """Whether this is the chunk's last part (always True for whole chunks)."""


class _AudioBuffer:
    """Samples of one stream, kept only as far back as the next window needs."""

    def __init__(self, window: int, chunk: int) -> None:
        self.window, self.chunk = window, chunk
        self.samples = np.zeros(0, np.float32)
        self.start = 0  # absolute index of samples[0]
        self.lock = threading.Lock()

    def push(self, samples: np.ndarray) -> None:
        with self.lock:
            self.samples = np.concatenate((self.samples, np.asarray(samples, np.float32).ravel()))

    def ahead_of(self, chunk_index: int, n: int) -> np.ndarray | None:
        """The ``n`` samples right after chunk ``chunk_index`` if all have arrived, else None."""
        end = (chunk_index + 1) * self.chunk
        with self.lock:
            lo = end - self.start
            if n <= 0 or lo < 0 or lo + n > len(self.samples):
                return None
            return self.samples[lo : lo + n].copy()

    def window_for(self, chunk_index: int) -> np.ndarray:
        """The 3-s window ending with chunk ``chunk_index``; silence where nothing arrived."""
        end = (chunk_index + 1) * self.chunk
        begin = end - self.window
        out = np.zeros(self.window, np.float32)
        with self.lock:
            lo, hi = max(begin, self.start), min(end, self.start + len(self.samples))
            if hi > lo:
                out[lo - begin : hi - begin] = self.samples[lo - self.start : hi - self.start]
            # The next window starts one chunk later: drop what it will never read.
            keep_from = end + self.chunk - self.window
            if keep_from > self.start:
                drop = min(keep_from - self.start, len(self.samples))
                self.samples = self.samples[drop:]
                self.start += drop
        return out


def _finished(device: torch.device) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` is done, so a stage's timing
    on a GPU covers its kernels and not only their launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class StreamingSession:
    """A live character stream for one character; see the module docstring."""

    def __init__(
        self,
        bundle: ModelBundle,
        image: np.ndarray,
        *,
        references: Sequence[ReferenceImage] = (),
        prompt: str = "",
        schedule: OnlineSchedule | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        self.bundle = bundle.eval()
        self.cfg = cfg = bundle.cfg
        if cfg.attention != "chunk_causal":
            raise ValueError(
                f"model {cfg.name!r} is not an online model (attention={cfg.attention!r}); "
                "stream with an -online bundle"
            )
        if device is None:  # where the bundle's weights are
            device = next(bundle.transformer.parameters()).device
        self.device = resolve_device(device)
        self.schedule = schedule or bundle.spec_online_schedule()
        spec = bundle.spec
        self.sample_rate = spec.sample_rate
        self.chunk_samples = round(cfg.chunk_seconds * spec.sample_rate)
        self.window_frames = 3 * cfg.frames_per_chunk
        window_samples = 3 * self.chunk_samples
        self.audio = {
            "speak": _AudioBuffer(window_samples, self.chunk_samples),
            "listen": _AudioBuffer(window_samples, self.chunk_samples),
        }
        self._prompt = prompt
        self._cues: list[str | None] = [None] * cfg.latents_per_chunk
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():
            first = self._encode_image(image)
            extra = [(r.kind, r.subtype, self._encode_image(r.image)) for r in references]
            refs = _references(first, first, extra)
        self.latent_shape = (1, cfg.out_channels, cfg.latents_per_chunk, *first.shape[3:])
        self.stepper = ChunkStepper(bundle.transformer, bundle.refiner, refs, self.schedule, seed)
        self._light_history: torch.Tensor | None = None
        # The bundle's decoder, as offline: the light one only where the bundle names it.
        self._light = bundle.light_decoder if bundle.spec.decoder == "light" else None
        self._vae_stream = bundle.vae.streaming_decoder() if self._light is None else None
        self._decoder_ahead = 0  # frames of speech the decoder reads past a chunk's end
        if self._vae_stream is not None and getattr(bundle.vae, "speech_dim", 0):
            self._decoder_ahead = bundle.vae.decoder.speech_context[1]
        self.next_index = 0

    # ---- inputs (any thread) ------------------------------------------------------------------
    def push_audio(self, stream: str, samples: np.ndarray) -> None:
        """Append ``samples`` (float32 at the bundle's sample rate) to ``speak`` or ``listen``."""
        if stream not in self.audio:
            raise ValueError(f"stream must be 'speak' or 'listen', got {stream!r}")
        self.audio[stream].push(samples)

    def set_prompt(self, text: str) -> None:
        """Change the text prompt; it takes effect at the next chunk boundary."""
        if not isinstance(text, str):
            raise ValueError("prompt must be a string")
        self._prompt = text

    def set_cues(self, cues: str | Sequence[str | None] | None) -> None:
        """Timed text cues of the chunks to come (read by a model with ``text_cues``): one text
        for every latent frame, a list of one text or None per latent frame of a chunk, or None
        for no cue. Takes effect at the next chunk boundary."""
        n = self.cfg.latents_per_chunk
        if cues is None or isinstance(cues, str):
            cues = [cues] * n
        cues = list(cues)
        if len(cues) != n or any(c is not None and not isinstance(c, str) for c in cues):
            raise ValueError(f"cues must be a string, None or {n} strings/None (one per latent)")
        self._cues = cues

    def _encode_text(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        if text not in self._text_cache:
            if len(self._text_cache) > 64:
                self._text_cache.clear()
            emb, mask = self.bundle.text_encoder.encode([text])
            self._text_cache[text] = (emb.to(self.device), mask.to(self.device))
        return self._text_cache[text]

    # ---- stages -------------------------------------------------------------------------------
    def _encode_image(self, image: np.ndarray) -> torch.Tensor:
        spec = self.bundle.spec
        rgb = fit_image(np.asarray(image), spec.height, spec.width)
        video = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1).float() / 127.5 - 1.0
        return self.bundle.vae.encode(video[None, :, None])

    def conditions(self, index: int) -> ChunkConditions:
        """Conditions of chunk ``index``: the prompt and cues now in force, the 3-s audio
        windows."""
        text, text_mask = self._encode_text(self._prompt)
        feats, windows = {}, {}
        for name, buf in self.audio.items():
            windows[name] = buf.window_for(index)
            wave = torch.from_numpy(windows[name]).to(self.device)[None]
            feats[name] = self.bundle.audio_encoder(wave, self.window_frames).float()
        return ChunkConditions(
            text=text,
            text_mask=text_mask,
            cues=text_cues(self._cues, self._encode_text),
            cue_actions=torch.tensor(
                [[c is not None and names_action(c) for c in self._cues]], device=self.device
            ),
            speak_audio=feats["speak"],
            listen_audio=feats["listen"],
            audio_offset=-2 * self.cfg.frames_per_chunk,
            speak_ahead=self._speak_ahead(index, windows["speak"]),
        )

    def _speak_ahead(self, index: int, window: np.ndarray) -> torch.Tensor | None:
        """Speak features of the frames after chunk ``index`` that a speech-reading decoder
        looks ahead to, when their audio (and its analysis window) has already arrived — a file
        or a speech synthesiser running ahead of real time; None in a live stream."""
        frames = self._decoder_ahead
        if not frames:
            return None
        spec, mel = self.bundle.spec, self.bundle.audio_encoder.config
        need = int(np.ceil(frames * spec.sample_rate / self.cfg.fps)) + mel.n_fft // 2
        ahead = self.audio["speak"].ahead_of(index, need)
        if ahead is None:
            return None
        wave = torch.from_numpy(np.concatenate([window, ahead])).to(self.device)[None]
        return self.bundle.audio_encoder(wave, self.window_frames + frames)[:, -frames:].float()

    def chunk_speech(self, cond: ChunkConditions) -> torch.Tensor | None:
        """The speak features of a chunk's own frames (the end of its 3-s window) and of the
        frames after it where known (`ChunkConditions.speak_ahead`), for a VAE decoder that
        reads speech; None for one that does not."""
        if self._light is not None:
            return None
        own = cond.speak_audio[:, -self.cfg.frames_per_chunk :]
        if cond.speak_ahead is not None:
            own = torch.cat([own, cond.speak_ahead], dim=1)
        return decoder_speech(self.bundle, own)

    def decode(
        self,
        latents: torch.Tensor,
        speech: torch.Tensor | None = None,
        ahead: torch.Tensor | None = None,
    ) -> np.ndarray:
        """Latent chunk (1, C, Fc, h, w) -> frames (4 Fc, H, W, 3) uint8, causally.

        ``speech`` (1, 4 Fc, D): the speak features of these frames (`chunk_speech`), read by a
        VAE decoder with a speech path; ``ahead``: those of the frames just after, where known.
        """
        if self._light is not None:
            video = self._light(latents, self._light_history)
            self._light_history = latents[:, :, -1:]
        else:
            first = self._vae_stream.latent_frames_seen == 0
            kw = {} if speech is None else {"speech": speech, "ahead": ahead}
            video = self._vae_stream.decode_chunk(latents, **kw)
            if first:  # the causal VAE's first latent is one frame: repeat it (pipeline alignment)
                span = self.cfg.temporal_compression
                video = torch.cat([video[:, :, :1]] * (span - 1) + [video], dim=2)
        video = ((video[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return video.permute(1, 2, 3, 0).cpu().numpy()

    def decode_parts(
        self,
        index: int,
        latents: torch.Tensor,
        timings: dict[str, float],
        part_latents: int,
        speech: torch.Tensor | None = None,
    ) -> Iterator[StreamChunk]:
        """Decode chunk ``index`` ``part_latents`` latent frames at a time, one `StreamChunk`
        per part. The decoder is causal with history, so the parts' frames, concatenated, are
        exactly the whole chunk's; the first frames reach the viewer after one part's decode
        instead of the whole chunk's. ``timings["decode"]`` accumulates over the parts.
        ``speech``: the chunk's `chunk_speech`, split over the parts likewise (frames past the
        chunk's own are what the last part looks ahead to)."""
        n, span = latents.shape[2], self.cfg.temporal_compression
        timings["decode"] = 0.0
        for part, start in enumerate(range(0, n, part_latents)):
            t = time.perf_counter()
            stop = min(start + part_latents, n)
            part_speech = ahead = None
            if speech is not None:
                part_speech = speech[:, start * span : stop * span]
                ahead = speech[:, stop * span :]
            frames = self.decode(latents[:, :, start:stop], part_speech, ahead)
            timings["decode"] += time.perf_counter() - t
            last = start + part_latents >= n
            yield StreamChunk(index=index, frames=frames, timings=timings, part=part, last=last)

    # ---- running ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> StreamChunk:
        """Generate, refine and decode the next chunk, sequentially."""
        return next(self._step_parts(None))

    @torch.no_grad()
    def _step_parts(self, part_latents: int | None) -> Iterator[StreamChunk]:
        index, timings = self.next_index, {}
        t = time.perf_counter()
        cond = self.conditions(index)
        timings["conditions"] = _finished(self.device) - t
        t = time.perf_counter()
        x0 = self.stepper.backbone_step(cond, self.latent_shape, self.device)
        timings["backbone"] = _finished(self.device) - t
        t = time.perf_counter()
        x0 = self.stepper.refine_step(cond, x0)
        timings["refiner"] = _finished(self.device) - t
        self.next_index += 1
        speech = self.chunk_speech(cond)
        yield from self.decode_parts(index, x0, timings, part_latents or x0.shape[2], speech)

    def chunks(
        self,
        count: int | None = None,
        *,
        pipelined: bool = False,
        lookahead: int = 2,
        part_latents: int | None = None,
    ) -> Iterator[StreamChunk]:
        """Yield chunks for ever (or ``count`` of them); ``pipelined`` overlaps the three stages.

        ``part_latents`` delivers each chunk in parts of that many latent frames (4 video frames
        each; `StreamChunk.part` / ``last`` say where a part belongs), so playback can start
        after a part is decoded rather than the whole chunk: a lower time to first frame, the
        same frames.
        """
        if part_latents is not None and part_latents < 1:
            raise ValueError(f"part_latents must be >= 1 latent frame, got {part_latents}")
        if not pipelined:
            produced = 0
            while count is None or produced < count:
                yield from self._step_parts(part_latents)
                produced += 1
            return
        yield from _Pipeline(self, count, lookahead, part_latents).run()


def generate_online(
    bundle: ModelBundle,
    image: np.ndarray,
    *,
    speak_audio: np.ndarray | None,
    listen_audio: np.ndarray | None,
    seconds: float,
    script: Sequence = (),
    references: Sequence[ReferenceImage] = (),
    seed: int = 0,
    progress=None,
):
    """Stream ``seconds`` of video to memory with a `StreamingSession` (``lpm generate --online``).

    Audio arrays are float32 at the bundle's sample rate; returns a `GeneratedVideo`.
    """
    from lpm.inference.pipeline import GeneratedVideo

    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    session = StreamingSession(bundle, image, references=references, seed=seed)
    sr = bundle.spec.sample_rate
    n_chunks = max(1, int(np.ceil(seconds / bundle.cfg.chunk_seconds - 1e-9)))
    n_samples = round(n_chunks * bundle.cfg.chunk_seconds * sr)
    tracks = {}
    for name, wave in (("speak", speak_audio), ("listen", listen_audio)):
        track = np.zeros(n_samples, np.float32)
        if wave is not None:
            track[: min(n_samples, len(wave))] = wave[:n_samples]
        session.push_audio(name, track)
        tracks[name] = track
    frames = []
    for index in range(n_chunks):
        # Prompts change only at chunk boundaries: the one in force at the chunk's middle;
        # the other segments covering a latent frame's middle are its cue.
        middle = (index + 0.5) * bundle.cfg.chunk_seconds
        prompt = next((s.text for s in script if s.start <= middle < s.end), "")
        session.set_prompt(prompt)
        span, per = bundle.cfg.temporal_compression, bundle.cfg.latents_per_chunk
        session.set_cues([
            script_cue(script, ((index * per + f) * span + span // 2) / bundle.cfg.fps, prompt)
            for f in range(per)
        ])  # fmt: skip
        frames.append(session.step().frames)
        if progress is not None:
            progress(index + 1, n_chunks)
    n_frames = round(seconds * bundle.cfg.fps)
    video = np.concatenate(frames)[:n_frames]
    mix = np.clip(tracks["speak"] + tracks["listen"], -1, 1)[: round(seconds * sr)]
    return GeneratedVideo(
        frames=video,
        fps=bundle.cfg.fps,
        audio=mix.astype(np.float32),
        sample_rate=sr,
        latents=torch.zeros(0),
    )


class _Pipeline:
    """Backbone (n), refiner (n-1) and decode (n-2) in three threads with bounded queues."""

    def __init__(
        self, session: StreamingSession, count: int | None, lookahead: int,
        part_latents: int | None = None,
    ) -> None:  # fmt: skip
        if lookahead < 1:
            raise ValueError(f"lookahead must be >= 1 chunk, got {lookahead}")
        self.s, self.count, self.part_latents = session, count, part_latents
        self.to_refine: queue.Queue = queue.Queue(maxsize=1)
        self.to_decode: queue.Queue = queue.Queue(maxsize=1)
        parts = 1 if part_latents is None else -(-session.latent_shape[2] // part_latents)
        self.out: queue.Queue = queue.Queue(maxsize=lookahead * parts)  # lookahead in chunks
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def _guard(self, fn):
        def run():
            try:
                with torch.no_grad():
                    fn()
            except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
                self.error = err
                self.stop.set()

        return run

    def _put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue
        return None

    def _backbone(self) -> None:
        s, n = self.s, 0
        while (self.count is None or n < self.count) and not self.stop.is_set():
            index = s.next_index
            t = time.perf_counter()
            cond = s.conditions(index)
            t1 = _finished(s.device)
            x0 = s.stepper.backbone_step(cond, s.latent_shape, s.device)
            timings = {"conditions": t1 - t, "backbone": _finished(s.device) - t1}
            s.next_index += 1
            n += 1
            if not self._put(self.to_refine, (index, cond, x0, timings)):
                return
        self._put(self.to_refine, None)

    def _refiner(self) -> None:
        while (item := self._get(self.to_refine)) is not None:
            index, cond, x0, timings = item
            t = time.perf_counter()
            x0 = self.s.stepper.refine_step(cond, x0)
            timings["refiner"] = _finished(self.s.device) - t
            speech = self.s.chunk_speech(cond)
            if not self._put(self.to_decode, (index, x0, timings, speech)):
                return
        self._put(self.to_decode, None)

    def _decoder(self) -> None:
        while (item := self._get(self.to_decode)) is not None:
            index, x0, timings, speech = item
            parts = self.part_latents or x0.shape[2]
            for part in self.s.decode_parts(index, x0, timings, parts, speech):
                if not self._put(self.out, part):
                    return
        self._put(self.out, None)

    def run(self) -> Iterator[StreamChunk]:
        threads = [
            threading.Thread(target=self._guard(f), daemon=True)
            for f in (self._backbone, self._refiner, self._decoder)
        ]
        for th in threads:
            th.start()
        try:
            while True:
                try:
                    chunk = self.out.get(timeout=0.05)
                except queue.Empty:
                    if self.error is not None:
                        break
                    continue
                if chunk is None:
                    break
                yield chunk
        finally:
            self.stop.set()
            for th in threads:
                th.join(timeout=10)
        if self.error is not None:
            raise self.error
