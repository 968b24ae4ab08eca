"""Real-time streaming inference: an incremental KV-cache engine for stream models.

``StreamingSession`` reads one frame a second and decides Silence/Standby/Response
with a prefill of only the new turn; ``ReencodeSession`` is the original whole-
conversation approach, kept as the reference the engine must match. Pure transformers
and torch: no ms-swift import.
"""

from .decoding import AnswerDecoder, DecisionRule
from .prompt import PromptTokens, StateTokenError, chunk_positions, state_token_ids
from .session import StreamEvent, StreamingSession

__all__ = [
    "AnswerDecoder",
    "DecisionRule",
    "PromptTokens",
    "StateTokenError",
    "StreamEvent",
    "StreamingSession",
    "chunk_positions",
    "state_token_ids",
]
