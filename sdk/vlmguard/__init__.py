"""vlmguard: an on-device guard for vision-language models that rewrites, not just blocks.

    from vlmguard import Guard
    guard = Guard.from_pretrained()
    result = guard.rewrite("photo.jpg", "how do I take the next step?")
    send_to_vlm(image, result.prompt)

    # OpenAI-style chat messages (data: or http(s) image URLs), sync or async:
    out = guard.rewrite_messages(messages)       # out.messages to forward, out.result
    result = await guard.arewrite(image, text)   # runs in a worker thread
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    AnimatedImageError,
    EmptyInputError,
    GuardError,
    ImageDecodeError,
    ImageSizeError,
    ImageTooLargeError,
    InvalidInputError,
    ModelLoadError,
    TextDecodeError,
    UnsupportedInputTypeError,
    VLMGuardError,
)
from .guard import Guard  # noqa: E402
from .messages import (  # noqa: E402
    FetchLimits,
    ImageContentTypeError,
    ImageFetchError,
    ImageFetchHTTPError,
    ImageFetchRedirectError,
    ImageFetchTimeoutError,
    ImageFetchTooLargeError,
    ImageURLNotAllowedError,
    InvalidMessagesError,
    MessagesResult,
)
from .policy import Policy  # noqa: E402
from .result import Evidence, Reasoning, RewriteResult  # noqa: E402

__all__ = [
    "Guard", "RewriteResult", "Reasoning", "Evidence", "Policy", "__version__",
    "VLMGuardError", "InvalidInputError", "UnsupportedInputTypeError", "EmptyInputError",
    "ImageDecodeError", "ImageTooLargeError", "ImageSizeError", "AnimatedImageError",
    "TextDecodeError",
    "ModelLoadError", "GuardError",
    "FetchLimits", "MessagesResult", "InvalidMessagesError", "ImageFetchError",
    "ImageURLNotAllowedError", "ImageFetchTimeoutError", "ImageFetchTooLargeError",
    "ImageFetchRedirectError", "ImageContentTypeError", "ImageFetchHTTPError",
]
