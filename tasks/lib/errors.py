"""The error hierarchy: one class per cause, each able to say itself in one clear line.

The command line prints ``str(error)`` and exits non-zero; nothing else is needed to tell the
user what went wrong and what to do. Messages name the file, the recipe line and key, or the
parameter at fault, and end with a hint where there is something to do.
"""

from __future__ import annotations


class DepthcraftError(Exception):
    """Base of every error depthcraft raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(DepthcraftError):
    """A file, URL or value given by the user cannot be used."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message, hint=hint)


class ParameterError(DepthcraftError):
    """A step or command parameter is out of range or inconsistent."""

    exit_code = 2

    def __init__(self, message: str, *, parameter: str | None = None, hint: str | None = None):
        self.parameter = parameter
        self.reason = message  # without the "parameter '...': " prefix, for callers that re-word it
        super().__init__(f"parameter {parameter!r}: {message}" if parameter else message, hint=hint)


class RecipeError(DepthcraftError):
    """A recipe is malformed; names the file, line and key."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None, hint: str | None = None):
        self.file, self.line, self.key = file, line, key
        self.reason = message  # without the "file:line: key: " prefix, for callers that re-place it
        where = file or "<recipe>"
        if line is not None:
            where += f":{line}"
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {message}", hint=hint)


class OutputError(DepthcraftError):
    """An output cannot be written where it belongs (a read-only folder, a file where a folder
    should be, a folder named like the file). Running again does not help; the store is fine."""

    def __init__(self, path: str, cause: OSError):
        self.path = str(path)
        # (making a folder where a file is: FileExistsError, or NotADirectoryError under it)
        in_the_way = isinstance(cause, (FileExistsError, NotADirectoryError))
        why = "a file is in the way of this folder" if in_the_way else (cause.strerror or str(cause))
        super().__init__(f"cannot write {self.path}: {why}",
                         hint="free that path or make it writable, or choose another output root with --out")


class ProviderError(DepthcraftError):
    """A depth provider failed; carries the provider's request id when it has one."""

    def __init__(self, message: str, *, provider: str, request_id: str | None = None,
                 hint: str | None = None, retryable: bool = False):
        self.provider, self.request_id, self.retryable = provider, request_id, retryable
        text = f"{provider}: {message}"
        if request_id:
            text += f" [request id {request_id}]"
        super().__init__(text, hint=hint)


class StepError(DepthcraftError):
    """A step failed on one image; wraps the cause with the step id and image name."""

    def __init__(self, step_id: str, image: str, cause: BaseException):
        self.step_id, self.image, self.cause = step_id, image, cause
        super().__init__(f"step {step_id!r} on {image}: {cause}")


class WorkerError(DepthcraftError):
    """A worker process ended without an answer (killed, out of memory, crashed), or its
    answer could not be read back."""


class ForkFailed(WorkerError):
    """Worker processes could not be started (``fork`` refused: memory limits, process
    limits); nothing was computed yet, so the caller may fall back to threads."""


class EncoderError(DepthcraftError):
    """The video encoder (ffmpeg) failed or stopped while a video was being written."""
