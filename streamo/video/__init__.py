"""Video access: duration probing, exact per-turn frame sampling and the frame cache.

Every picture is made as a player shows it (``display``: rotation and pixel aspect).

``sampling`` decodes (training and live inference share its rule; ``segments`` decodes a file
in pieces at once for the cache), ``cache`` stores the sampled frames as JPEGs at the model's
pixel budget, ``extract`` fills the cache for a whole data file (``streamo frames``).
"""

from .cache import CacheEntry, FrameCache
from .display import Display
from .probe import VideoError, VideoInfo, probe_duration, probe_video
from .sampling import MAX_PIXELS, MIN_PIXELS, SampledFrame, fit_to_budget, iter_frames, sample_frames, smart_resize

__all__ = [
    "CacheEntry",
    "Display",
    "FrameCache",
    "MAX_PIXELS",
    "MIN_PIXELS",
    "SampledFrame",
    "VideoError",
    "VideoInfo",
    "fit_to_budget",
    "iter_frames",
    "probe_duration",
    "probe_video",
    "sample_frames",
    "smart_resize",
]
