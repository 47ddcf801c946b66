"""lipdub: re-animate a speaker's mouth to match a new speech track.

The data path is job → probe → prep → audio → render → mux → result; `lipdub.pipeline` is the only
module that knows that order. Everything else is a stage function over local files.
"""

__version__ = "0.1.0"

FPS = 25  # every stage works on a 25-fps timeline (DH_live/DINet convention)
SAMPLE_RATE = 16_000  # audio stage input rate
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
