"""Audio: validated loading, wav2vec2 features (real scales), log-mel + projector (lpm-nano),
and online 3-s windows."""

from lpm.models.audio.io import (
    AudioLoadError,
    ClippedAudioError,
    ClippedAudioWarning,
    EmptyAudioError,
    NotAudioError,
    SilentAudioError,
    load_audio,
    resample,
)
from lpm.models.audio.mel import (
    AudioProjector,
    AudioProjectorConfig,
    LogMelConfig,
    LogMelFeatures,
    mel_filterbank,
)
from lpm.models.audio.streaming import AudioWindowConfig, AudioWindows
from lpm.models.audio.wav2vec2 import Wav2Vec2Features, load_wav2vec2

__all__ = [
    "AudioLoadError",
    "AudioProjector",
    "AudioProjectorConfig",
    "AudioWindowConfig",
    "AudioWindows",
    "ClippedAudioError",
    "ClippedAudioWarning",
    "EmptyAudioError",
    "LogMelConfig",
    "LogMelFeatures",
    "NotAudioError",
    "SilentAudioError",
    "Wav2Vec2Features",
    "load_audio",
    "load_wav2vec2",
    "mel_filterbank",
    "resample",
]
