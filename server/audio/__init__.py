"""Audio consumers: what the relay does with each participant's decoded 16 kHz audio.

The relay's tap calls every :class:`AudioConsumer` with :class:`AudioChunk` objects;
this package holds the contract and the bundled consumers (recording, live captions).
"""

from .consumer import (
    BYTES_PER_SECOND,
    CHANNELS,
    SAMPLE_RATE,
    SAMPLE_WIDTH,
    AudioChunk,
    AudioConsumer,
    BaseConsumer,
    RoomOutput,
    RoomPatterns,
    dbfs,
    rms,
)
from .engines import PocketSphinxRecognizer, Recognizer, RecognizerFactory
from .recorder import WavRecorder, safe_name
from .stt import RecognizerStats, SpeechRecognizer
from .transcripts import TranscriptStore
from .vad import Utterance, VoiceSegmenter

__all__ = [
    "BYTES_PER_SECOND",
    "CHANNELS",
    "SAMPLE_RATE",
    "SAMPLE_WIDTH",
    "AudioChunk",
    "AudioConsumer",
    "BaseConsumer",
    "PocketSphinxRecognizer",
    "Recognizer",
    "RecognizerFactory",
    "RecognizerStats",
    "RoomOutput",
    "RoomPatterns",
    "SpeechRecognizer",
    "TranscriptStore",
    "Utterance",
    "VoiceSegmenter",
    "WavRecorder",
    "dbfs",
    "rms",
    "safe_name",
]
