"""Video access: duration probing, exact per-turn frame sampling and the frame cache.

``sampling`` decodes (training and live inference share its rule), ``cache`` stores the
sampled frames as JPEGs at the model's pixel budget, ``extract`` fills the cache for a
whole data file (``streamo frames``).
"""

from .cache import CacheEntry, FrameCache
from .probe import VideoError, probe_duration
from .sampling import MAX_PIXELS, MIN_PIXELS, SampledFrame, iter_frames, sample_frames, smart_resize

__all__ = [
    "CacheEntry",
    "FrameCache",
    "MAX_PIXELS",
    "MIN_PIXELS",
    "SampledFrame",
    "VideoError",
    "iter_frames",
    "probe_duration",
    "sample_frames",
    "smart_resize",
]
