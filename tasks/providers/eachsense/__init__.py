"""The ``eachsense`` provider (hosted each::sense chat API) and its client, split by concern.

- :mod:`.provider`: the depth provider (``estimate``, ``refine``): what to send, how to read the answer;
- :mod:`.messages`: the words sent per use case, and conventions read back from words;
- :mod:`.client`: :class:`EachSenseClient` (chat turns, session memory, downloads);
- :mod:`.transport`: the ``httpx`` client and its swappable transport;
- :mod:`.sse`: the event stream (framing by ``httpx-sse``) and the result of one turn;
- :mod:`.uploads`: local images to public URLs through the storage API;
- :mod:`.retries`: ``Retry-After``, backoff with jitter, the retry loop;
- :mod:`.errors`: one exception class per cause and the mapping from an answer to it;
- :mod:`.keys` and :mod:`.redact`: the API key, read at request time and scrubbed from text;
- :mod:`.concurrency`: the process-wide limit on calls in flight, one turn at a time per session.
"""

from .provider import EachSenseProvider, decode_depth, encode_photo, find_answer, is_url

__all__ = ["EachSenseProvider", "decode_depth", "encode_photo", "find_answer", "is_url"]
