"""Adapters that let `lpm serve` act as the video output of voice-agent frameworks.

client.py   `LPMClient`: an asyncio client of the session protocol (any framework can use it)
pipecat.py  `LPMVideoProcessor`: a Pipecat FrameProcessor (extra ``lpm[pipecat]``)
"""
